// Package compat checks that unmodified HDFS clients work against godfs:
// Debian's hdfs CLI, the colinmarc/hdfs Go library and rclone's hdfs
// backend, each against a real godfs cluster.
package compat

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"os"
	"os/exec"
	"testing"
)

const blockSize = 1 << 20 // the test clusters' block size

// needTool skips a test when an external client is missing, except in CI,
// where .ci/run installs it and its absence is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s is not installed; run .ci/run to install it", name)
	}
	return p
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// hdfsFileChecksum computes what HDFS reports as the MD5-of-MD5-of-CRC32C
// checksum of data stored in blocks of blockSize: the MD5 of the
// concatenated per-block MD5s of the big-endian CRC32C of each 512-byte
// chunk.
func hdfsFileChecksum(data []byte, blockSize int) string {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var blockMD5s []byte
	for off := 0; off < len(data); off += blockSize {
		block := data[off:min(off+blockSize, len(data))]
		var crcs []byte
		for c := 0; c < len(block); c += 512 {
			crcs = binary.BigEndian.AppendUint32(crcs, crc32.Checksum(block[c:min(c+512, len(block))], tab))
		}
		sum := md5.Sum(crcs)
		blockMD5s = append(blockMD5s, sum[:]...)
	}
	sum := md5.Sum(blockMD5s)
	return hex.EncodeToString(sum[:])
}

// run runs a command and returns stdout, stderr and the exit code.
func run(t *testing.T, env []string, stdin []byte, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errb.String(), code
}

package xfer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/godfs/godfs/protocol"
)

// slowSums is ChunkSums the plain way, one standard-library CRC per chunk.
func slowSums(data []byte) []byte { return slowSumsInto(nil, data) }

func slowSumsInto(dst, data []byte) []byte {
	for len(data) > 0 {
		n := min(len(data), protocol.BytesPerChecksum)
		dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(data[:n], CRC32C))
		data = data[n:]
	}
	return dst
}

// ChunkSums, with each fold the machine can run, agrees with the standard
// library for every length around the edges of its chunks and groups of
// four, at every alignment, for random, zero and all-ones data.
func TestChunkSumsMatchStandardLibrary(t *testing.T) {
	eachFold(func(name string) { t.Run(name, chunkSumsMatchStandardLibrary) })
}

func chunkSumsMatchStandardLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70<<10)
	lengths := []int{0, 1, 4, 511, 512, 513, 2047, 2048, 2049, 4095, 4096, 6144 + 7, 64 << 10, 64<<10 + 100}
	for range 50 {
		lengths = append(lengths, rng.IntN(len(buf)-8))
	}
	for _, fill := range []string{"random", "zeros", "ones"} {
		for i := range buf {
			switch fill {
			case "random":
				buf[i] = byte(rng.Uint32())
			case "zeros":
				buf[i] = 0
			case "ones":
				buf[i] = 0xFF
			}
		}
		for _, n := range lengths {
			for off := range 8 {
				data := buf[off : off+n]
				prefix := []byte{9, 9} // appends after what dst holds
				got := ChunkSums(CRC32C, prefix, data)
				if want := append([]byte{9, 9}, slowSums(data)...); !bytes.Equal(got, want) {
					t.Fatalf("%s data, %d bytes at offset %d: sums differ", fill, n, off)
				}
			}
		}
	}
}

// VerifyChunks names the chunk a flipped bit is in, wherever it is among
// the chunks a fold checks, and accepts the data unflipped.
func TestVerifyNamesTheBadChunk(t *testing.T) {
	eachFold(func(name string) { t.Run(name, verifyNamesTheBadChunk) })
}

func verifyNamesTheBadChunk(t *testing.T) {
	data := make([]byte, 300*protocol.BytesPerChecksum+77)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sums := ChunkSums(CRC32C, nil, data)
	if err := VerifyChunks(CRC32C, data, sums, 0); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 600, 2047, 2048, 65535, 65536, 100000, 300*protocol.BytesPerChecksum - 1, len(data) - 1} {
		data[i] ^= 0x10
		err := VerifyChunks(CRC32C, data, sums, 1000)
		data[i] ^= 0x10
		if want := fmt.Sprintf("chunk %d", 1000+i/protocol.BytesPerChecksum); !errors.Is(err, protocol.ErrCorruption) || !strings.HasSuffix(err.Error(), want) {
			t.Fatalf("flipped byte %d: %v, want corruption in %s", i, err, want)
		}
	}
}

package xfer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/godfs/godfs/protocol"
)

// ChunkSums appends to dst the big-endian CRC of each 512-byte chunk of
// data (the last chunk may be short).
func ChunkSums(tab *crc32.Table, dst, data []byte) []byte {
	if tab == CRC32C {
		dst, data = appendGroupSums(dst, data)
	}
	for len(data) > 0 {
		n := min(len(data), protocol.BytesPerChecksum)
		dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(data[:n], tab))
		data = data[n:]
	}
	return dst
}

// NumChunks is the number of checksums that cover n bytes.
func NumChunks(n int64) int64 {
	return (n + protocol.BytesPerChecksum - 1) / protocol.BytesPerChecksum
}

// VerifyChunks checks data against its chunk checksums. The error wraps
// protocol.ErrCorruption; chunkBase numbers the chunks in the message.
func VerifyChunks(tab *crc32.Table, data, sums []byte, chunkBase int64) error {
	if int64(len(sums)) != NumChunks(int64(len(data)))*protocol.ChecksumSize {
		return fmt.Errorf("%w: %d checksum bytes for %d data bytes", protocol.ErrCorruption, len(sums), len(data))
	}
	if tab == CRC32C {
		data, sums, chunkBase = verifyGroups(data, sums, chunkBase)
	}
	for i := int64(0); len(data) > 0; i++ {
		n := min(len(data), protocol.BytesPerChecksum)
		want := binary.BigEndian.Uint32(sums[i*4:])
		if got := crc32.Checksum(data[:n], tab); got != want {
			return fmt.Errorf("%w in chunk %d", protocol.ErrCorruption, chunkBase+i)
		}
		data = data[n:]
	}
	return nil
}

// verifyGroups checks what appendGroupSums covers of data against sums,
// a stack buffer of sums at a time, and returns what is left to check the
// slow way: the rest, or everything from a buffer that did not match, so
// that the slow way names the bad chunk.
func verifyGroups(data, sums []byte, chunk int64) ([]byte, []byte, int64) {
	var buf [128 * protocol.ChecksumSize]byte // the sums of 64 KiB
	for {
		k := min(len(data), len(buf)/protocol.ChecksumSize*protocol.BytesPerChecksum)
		got, _ := appendGroupSums(buf[:0], data[:k])
		if len(got) == 0 || !bytes.Equal(got, sums[:len(got)]) {
			return data, sums, chunk
		}
		n := len(got) / protocol.ChecksumSize
		data, sums, chunk = data[n*protocol.BytesPerChecksum:], sums[len(got):], chunk+int64(n)
	}
}

package xfer

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

func TestPacketRoundTrip(t *testing.T) {
	data := make([]byte, protocol.MaxPacketData-100) // last chunk short
	rand.Read(data)
	var buf bytes.Buffer
	in := &Packet{Offset: 1 << 20, Seqno: 7, Data: data, Sums: ChunkSums(CRC32C, nil, data)}
	if err := WritePacket(&buf, in); err != nil {
		t.Fatal(err)
	}
	wire := append([]byte{}, buf.Bytes()...)
	out, raw, err := ReadPacket(bufio.NewReader(&buf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Offset != in.Offset || out.Seqno != 7 || out.Last || !bytes.Equal(out.Data, data) || !bytes.Equal(raw, wire) {
		t.Fatalf("packet changed on the way: %+v", out)
	}
	if err := VerifyChunks(CRC32C, out.Data, out.Sums, 0); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyDetectsEveryFlippedByte(t *testing.T) {
	data := make([]byte, 3*protocol.BytesPerChecksum+10)
	rand.Read(data)
	sums := ChunkSums(CRC32C, nil, data)
	for _, i := range []int{0, 511, 512, 1500, len(data) - 1} {
		bad := append([]byte{}, data...)
		bad[i] ^= 1
		if err := VerifyChunks(CRC32C, bad, sums, 0); !errors.Is(err, protocol.ErrCorruption) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	if err := VerifyChunks(CRC32, data, sums, 0); !errors.Is(err, protocol.ErrCorruption) {
		t.Fatal("CRC32C sums verified as CRC32")
	}
}

// A Verifier reads a packet's data in pieces and checks each: it finds a
// flipped byte in any piece (naming the chunk of the block), checksums
// that are too few or too many, and a short read.
func TestVerifierChecksAsItReads(t *testing.T) {
	data := make([]byte, 2*checkedPiece+3*protocol.BytesPerChecksum+10)
	rand.Read(data)
	sums := ChunkSums(CRC32C, nil, data)
	read := func(wire []byte, sums []byte) ([]byte, error) {
		v := Verifier{Tab: CRC32C, Sums: sums, Chunk: 100}
		got := make([]byte, len(data))
		err := v.ReadFull(bytes.NewReader(wire), got)
		if err == nil {
			err = v.Done()
		}
		return got, err
	}
	if got, err := read(data, sums); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("good packet: %v", err)
	}
	for _, i := range []int{0, checkedPiece - 1, checkedPiece, 2*checkedPiece + 600, len(data) - 1} {
		bad := append([]byte{}, data...)
		bad[i] ^= 1
		_, err := read(bad, sums)
		if want := fmt.Sprintf("chunk %d", 100+i/protocol.BytesPerChecksum); !errors.Is(err, protocol.ErrCorruption) || !strings.Contains(err.Error(), want) {
			t.Fatalf("flipped byte %d: %v, want corruption in %s", i, err, want)
		}
	}
	if _, err := read(data, sums[:len(sums)-4]); !errors.Is(err, protocol.ErrCorruption) {
		t.Fatalf("a checksum short: %v", err)
	}
	if _, err := read(data, append(append([]byte{}, sums...), 1, 2, 3, 4)); !errors.Is(err, protocol.ErrCorruption) {
		t.Fatalf("a checksum too many: %v", err)
	}
	if _, err := read(data[:len(data)-1], sums); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short data: %v", err)
	}
}

func TestMalformedPacketsRejected(t *testing.T) {
	for _, b := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0, 1},     // huge length
		{0, 0, 0, 2, 0, 1},                 // length smaller than itself
		{0, 0, 0, 10, 0, 3, 1, 2, 3, 4, 5}, // garbage header, truncated
	} {
		if _, _, err := ReadPacket(bufio.NewReader(bytes.NewReader(b)), nil); err == nil {
			t.Errorf("accepted malformed packet %x", b)
		}
	}
}

func TestOpAndAck(t *testing.T) {
	var buf bytes.Buffer
	req := &pb.OpBlockChecksumProto{Header: &pb.BaseHeaderProto{Block: &pb.ExtendedBlockProto{
		PoolId: proto.String("p"), BlockId: proto.Uint64(9), GenerationStamp: proto.Uint64(1)}}}
	WriteOp(&buf, OpBlockChecksum, req)
	WriteAck(&buf, 3, []pb.Status{pb.Status_SUCCESS, pb.Status_ERROR_CHECKSUM})
	r := bufio.NewReader(&buf)
	op, err := ReadOpHeader(r)
	if err != nil || op != OpBlockChecksum {
		t.Fatalf("op %v %v", op, err)
	}
	got := &pb.OpBlockChecksumProto{}
	if err := ReadDelimited(r, got); err != nil || got.GetHeader().GetBlock().GetBlockId() != 9 {
		t.Fatalf("op body %v %v", got, err)
	}
	ack := &pb.PipelineAckProto{}
	if err := ReadDelimited(r, ack); err != nil {
		t.Fatal(err)
	}
	st := AckStatuses(ack)
	if ack.GetSeqno() != 3 || len(st) != 2 || st[1] != pb.Status_ERROR_CHECKSUM {
		t.Fatalf("ack %v", ack)
	}
}

// BenchmarkChunkSums is the checksums of 1 MiB packets, 512 bytes a chunk
// as HDFS has them: ChunkSums with each way the machine can run (folds
// with AVX-512, AVX2, AVX; crc3, three chunks through the CRC32
// instruction; "stdlib" is the standard library's CRC32C chunk by chunk) and
// one CRC32C over each whole packet ("whole"), with the packets in the
// cache ("hot") and taken in turn from 256 MiB ("cold", as packets just
// received are). Numbers are in docs/performance.md.
// Run: go test -run '^$' -bench ChunkSums ./protocol/xfer
func BenchmarkChunkSums(b *testing.B) {
	data := make([]byte, 256<<20)
	rand.Read(data)
	const packet = 1 << 20
	sums := make([]byte, 0, packet/protocol.BytesPerChecksum*protocol.ChecksumSize)
	for _, cold := range []bool{false, true} {
		run := func(name string, sum func(p []byte)) {
			b.Run(fmt.Sprintf("cold=%v/%s", cold, name), func(b *testing.B) {
				b.SetBytes(packet)
				off := 0
				for b.Loop() {
					sum(data[off : off+packet])
					if cold {
						off = (off + packet) % len(data)
					}
				}
			})
		}
		eachFold(func(name string) {
			run(name, func(p []byte) { sums = ChunkSums(CRC32C, sums[:0], p) })
		})
		run("whole", func(p []byte) { crc32.Checksum(p, CRC32C) })
	}
}

// Package xfer implements the framing of HDFS's DataTransferProtocol
// (version 28) that clients and datanodes share: operation headers, packets
// with CRC32C checksums per 512-byte chunk, and pipeline acks.
//
// An operation is a 2-byte version, a 1-byte op code and a varint-delimited
// Op*Proto. A packet is PLEN (4 bytes: 4 + checksums + data), HLEN (2
// bytes), a PacketHeaderProto, the checksums and the data. Acks are
// varint-delimited PipelineAckProtos.
package xfer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/internal/protoenc"
	"github.com/godfs/godfs/protocol/pb"
)

// Op is a DataTransferProtocol operation code.
type Op byte

// Operation codes (Hadoop's Op enum).
const (
	OpWriteBlock    Op = 80
	OpReadBlock     Op = 81
	OpReadMetadata  Op = 82
	OpReplaceBlock  Op = 83
	OpCopyBlock     Op = 84
	OpBlockChecksum Op = 85
	OpTransferBlock Op = 86
)

func (o Op) String() string {
	switch o {
	case OpWriteBlock:
		return "WRITE_BLOCK"
	case OpReadBlock:
		return "READ_BLOCK"
	case OpReadMetadata:
		return "READ_METADATA"
	case OpReplaceBlock:
		return "REPLACE_BLOCK"
	case OpCopyBlock:
		return "COPY_BLOCK"
	case OpBlockChecksum:
		return "BLOCK_CHECKSUM"
	case OpTransferBlock:
		return "TRANSFER_BLOCK"
	}
	return fmt.Sprintf("Op(%d)", byte(o))
}

// maxMessage bounds a delimited message on the data port.
const maxMessage = 1 << 20

// Checksum tables: CRC32C (Castagnoli, hardware accelerated on amd64 and
// arm64) is godfs's own; CRC32 (IEEE) is what some HDFS clients write with
// (colinmarc/hdfs, Hadoop with dfs.checksum.type=CRC32), and a replica
// keeps the type it was written with.
var (
	CRC32C = crc32.MakeTable(crc32.Castagnoli)
	CRC32  = crc32.IEEETable
)

// ChecksumTable returns the table for a checksum type, or an error for
// types godfs does not support.
func ChecksumTable(t pb.ChecksumTypeProto) (*crc32.Table, error) {
	switch t {
	case pb.ChecksumTypeProto_CHECKSUM_CRC32C:
		return CRC32C, nil
	case pb.ChecksumTypeProto_CHECKSUM_CRC32:
		return CRC32, nil
	}
	return nil, fmt.Errorf("checksum type %s is not supported (CRC32C and CRC32 are)", t)
}

// ChecksumType is the inverse of ChecksumTable.
func ChecksumType(tab *crc32.Table) pb.ChecksumTypeProto {
	if tab == CRC32 {
		return pb.ChecksumTypeProto_CHECKSUM_CRC32
	}
	return pb.ChecksumTypeProto_CHECKSUM_CRC32C
}

// WriteOp sends an operation header and its request.
func WriteOp(w io.Writer, op Op, m proto.Message) error { return writeOp(w, nil, op, m) }

// writeOp is WriteOp with what the connection owes from before (a read's
// status) in the same write.
func writeOp(w io.Writer, owed []byte, op Op, m proto.Message) error {
	buf := binary.BigEndian.AppendUint16(append(make([]byte, 0, 256), owed...), protocol.DataTransferVersion)
	buf = append(buf, byte(op))
	buf, err := protoenc.AppendDelimited(buf, m) // grows buf once if the op is bigger
	if err != nil {
		return fmt.Errorf("marshal %s: %w", op, err)
	}
	_, err = w.Write(buf)
	return err
}

// ReadOpHeader reads the version and op code of the next operation.
func ReadOpHeader(r io.Reader) (Op, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	if v := binary.BigEndian.Uint16(hdr[:2]); v != protocol.DataTransferVersion {
		return 0, fmt.Errorf("data transfer version %d, want %d", v, protocol.DataTransferVersion)
	}
	return Op(hdr[2]), nil
}

// WriteDelimited writes m with a varint length prefix.
func WriteDelimited(w io.Writer, m proto.Message) error {
	buf, err := AppendDelimited(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// readStatusOK is a reader's ClientReadStatusProto after a read that went
// well, as HDFS clients send it after the last packet.
var readStatusOK, _ = AppendDelimited(nil, &pb.ClientReadStatusProto{Status: pb.Status_CHECKSUM_OK.Enum()})

// AppendDelimited appends m, varint-length-prefixed, to dst.
func AppendDelimited(dst []byte, m proto.Message) ([]byte, error) {
	return protoenc.AppendDelimited(dst, m)
}

// ReadDelimited reads a varint-length-prefixed message into m.
func ReadDelimited(r io.ByteReader, m proto.Message) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if n > maxMessage {
		return fmt.Errorf("message of %d bytes is too large", n)
	}
	buf := make([]byte, n)
	for i := range buf {
		if buf[i], err = r.ReadByte(); err != nil {
			return io.ErrUnexpectedEOF
		}
	}
	return protoenc.Unmarshal(buf, m)
}

// Verifier checks a packet's data against its checksums piece by piece,
// each as soon as it is read.
type Verifier struct {
	Tab   *crc32.Table
	Sums  []byte // the checksums of what is not checked yet
	Chunk int64  // the number of the next chunk in the block
}

// checkedPiece is how much data is read before it is checked: 64 KiB is
// still in the CPU's cache then. Checked once a whole 1 MiB packet was
// read, CRC32C ran at about half the speed (BenchmarkChunkSums, cold).
const checkedPiece = 64 << 10

// ReadFull fills data from r and checks it, checkedPiece at a time. data
// is whole chunks but for a packet's last piece. A short read is
// io.ErrUnexpectedEOF; a mismatch wraps protocol.ErrCorruption.
func (v *Verifier) ReadFull(r io.Reader, data []byte) error {
	for len(data) > 0 {
		k := min(len(data), checkedPiece)
		if _, err := io.ReadFull(r, data[:k]); err != nil {
			return io.ErrUnexpectedEOF
		}
		n := min(NumChunks(int64(k))*protocol.ChecksumSize, int64(len(v.Sums)))
		if err := VerifyChunks(v.Tab, data[:k], v.Sums[:n], v.Chunk); err != nil {
			return err // a shortfall of checksums too
		}
		v.Chunk, v.Sums, data = v.Chunk+n/protocol.ChecksumSize, v.Sums[n:], data[k:]
	}
	return nil
}

// Done reports checksums left over once all the data was checked.
func (v *Verifier) Done() error {
	if len(v.Sums) > 0 {
		return fmt.Errorf("%w: %d checksum bytes too many", protocol.ErrCorruption, len(v.Sums))
	}
	return nil
}

// Packet is one data packet of a block.
type Packet struct {
	Offset int64 // offset in the block of the first data byte
	Seqno  int64
	Last   bool // the empty packet that closes a block
	Sync   bool // the writer asks for the data to be synced to disk
	Sums   []byte
	Data   []byte
	space  *[]byte // pooled space holding Sums and Data (see retain)
}

// WritePacket sends p. Sums must already hold the data's checksums.
func WritePacket(w io.Writer, p *Packet) error {
	buf := AppendPacketHead(make([]byte, 0, 64+len(p.Sums)), p)
	if len(p.Data) < 32<<10 {
		_, err := w.Write(append(buf, p.Data...))
		return err
	}
	// Large data: written from where it is (writev on a connection),
	// rather than copied after the head.
	bufs := net.Buffers{buf, p.Data}
	_, err := bufs.WriteTo(w)
	return err
}

// AppendPacketHead appends p's framing, header and checksums, everything
// but its data, to dst.
func AppendPacketHead(dst []byte, p *Packet) []byte {
	h := &pb.PacketHeaderProto{
		OffsetInBlock:     proto.Int64(p.Offset),
		Seqno:             proto.Int64(p.Seqno),
		LastPacketInBlock: proto.Bool(p.Last),
		DataLen:           proto.Int32(int32(len(p.Data))),
		SyncBlock:         proto.Bool(p.Sync),
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(p.Sums)+len(p.Data)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(protoenc.Size(h)))
	dst, _ = protoenc.Append(dst, h) // cannot fail: every field is set
	return append(dst, p.Sums...)
}

// ErrPacket marks a malformed packet.
var ErrPacket = errors.New("malformed packet")

// ReadPacket reads one packet. The returned packet's slices point into raw,
// which holds the packet exactly as it came off the wire (for forwarding
// down a pipeline without re-encoding).
//
// The packet is read into buf when it fits (pass the raw slice of the
// previous packet to reuse it), so its slices are valid only until buf is
// reused.
func ReadPacket(r *bufio.Reader, buf []byte) (p *Packet, raw []byte, err error) {
	return readPacket(r, buf, nil, 0)
}

// ReadCheckedPacket is ReadPacket that checks the data against the
// packet's checksums as it reads it (see Verifier); chunk numbers the
// packet's first chunk in the block. A mismatch wraps
// protocol.ErrCorruption.
func ReadCheckedPacket(r *bufio.Reader, buf []byte, tab *crc32.Table, chunk int64) (p *Packet, raw []byte, err error) {
	return readPacket(r, buf, tab, chunk)
}

// readPacket reads a packet, checking its data when tab is not nil.
func readPacket(r *bufio.Reader, buf []byte, tab *crc32.Table, chunk int64) (*Packet, []byte, error) {
	p, head, dataLen, err := ReadPacketHead(r, buf)
	if err != nil {
		return nil, nil, err
	}
	raw := head[:len(head)+dataLen] // ReadPacketHead left room for the data
	p.Data = raw[len(head):]
	if tab == nil {
		_, err = io.ReadFull(r, p.Data)
	} else {
		v := Verifier{Tab: tab, Sums: p.Sums, Chunk: chunk}
		if err = v.ReadFull(r, p.Data); err == nil && dataLen > 0 {
			err = v.Done()
		}
	}
	switch {
	case errors.Is(err, protocol.ErrCorruption):
		return nil, nil, err
	case err != nil:
		return nil, nil, fmt.Errorf("read packet: %w", io.ErrUnexpectedEOF)
	}
	return p, raw, nil
}

// ReadPacketHead reads a packet up to its data: its lengths, header and
// checksums, into head as they came off the wire. The packet's dataLen
// bytes of data follow in r, for the caller to read where it wants them
// (p.Data is nil). head is buf, or a new slice when buf is too small for
// the whole packet, with room for the data after it either way.
func ReadPacketHead(r *bufio.Reader, buf []byte) (p *Packet, head []byte, dataLen int, err error) {
	var lens [6]byte
	if _, err := io.ReadFull(r, lens[:]); err != nil {
		return nil, nil, 0, err
	}
	plen := int(binary.BigEndian.Uint32(lens[:4]))
	hlen := int(binary.BigEndian.Uint16(lens[4:]))
	if plen < 4 || plen > protocol.MaxPacketSize || hlen > 1024 {
		return nil, nil, 0, fmt.Errorf("%w: length %d, header %d", ErrPacket, plen, hlen)
	}
	n := 6 + hlen + plen - 4
	if cap(buf) >= n {
		head = buf[:6+hlen]
	} else {
		head = make([]byte, 6+hlen, n)
	}
	copy(head, lens[:])
	if _, err := io.ReadFull(r, head[6:]); err != nil {
		return nil, nil, 0, fmt.Errorf("read packet: %w", io.ErrUnexpectedEOF)
	}
	var h pb.PacketHeaderProto
	if err := protoenc.Unmarshal(head[6:], &h); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: header: %v", ErrPacket, err)
	}
	dataLen = int(h.GetDataLen())
	if dataLen < 0 || dataLen > plen-4 {
		return nil, nil, 0, fmt.Errorf("%w: data length %d of %d", ErrPacket, dataLen, plen-4)
	}
	head = head[:n-dataLen]
	if _, err := io.ReadFull(r, head[6+hlen:]); err != nil {
		return nil, nil, 0, fmt.Errorf("read packet: %w", io.ErrUnexpectedEOF)
	}
	return &Packet{
		Offset: h.GetOffsetInBlock(),
		Seqno:  h.GetSeqno(),
		Last:   h.GetLastPacketInBlock(),
		Sync:   h.GetSyncBlock(),
		Sums:   head[6+hlen:],
	}, head, dataLen, nil
}

// WriteAck sends a pipeline ack. Statuses go in both reply (what Hadoop 2
// and colinmarc/hdfs read) and flag (what Hadoop 3 reads first).
func WriteAck(w io.Writer, seqno int64, statuses []pb.Status) error {
	flags := make([]uint32, len(statuses))
	for i, s := range statuses {
		flags[i] = uint32(s)
	}
	return WriteDelimited(w, &pb.PipelineAckProto{Seqno: proto.Int64(seqno), Reply: statuses, Flag: flags})
}

// AckStatuses returns the per-datanode statuses of an ack, preferring the
// Hadoop 3 flag field (status in its low 4 bits) when present.
func AckStatuses(a *pb.PipelineAckProto) []pb.Status {
	if len(a.Flag) == 0 {
		return a.Reply
	}
	out := make([]pb.Status, len(a.Flag))
	for i, f := range a.Flag {
		out[i] = pb.Status(f & 0xf)
	}
	return out
}

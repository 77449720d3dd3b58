package datanode

import (
	"bufio"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

const (
	// idleTimeout closes a data connection with no next operation.
	idleTimeout = time.Minute
	// ioTimeout bounds each read or write on a pipeline connection.
	ioTimeout = 2 * time.Minute
	// ackQueue is how many packets may be written but not yet acked (a
	// datanode keeps no packet's data once written and forwarded, only
	// its number).
	ackQueue = 32
	// readPacketData is the data a read packet carries.
	readPacketData = xfer.ReadPacketData
	// readBatch is the data read and sent at a time: 15 packets, what
	// fits in a pooled packet space.
	readBatch = protocol.MaxPacketData / readPacketData * readPacketData
)

// serveConn serves operations on one connection until it closes.
func (d *DataNode) serveConn(c net.Conn) {
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	r := xfer.NewReader(c)
	defer xfer.FreeReader(r)
	var read *pb.ExtendedBlockProto // the block last read on c, whose status the client owes
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		// After a read the client says how it went, right away (HDFS's
		// clients) or with its next operation on the connection (godfs's,
		// saving a write); a client that read only part may close instead.
		if read != nil && !d.readStatus(c, r, read) {
			return
		}
		op, err := xfer.ReadOpHeader(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				d.log.Debug("data connection", "remote", c.RemoteAddr(), "err", err)
			}
			return
		}
		c.SetDeadline(time.Now().Add(ioTimeout))
		d.xceivers.Add(1)
		keep, block, err := d.serveOp(op, c, r)
		d.xceivers.Add(-1)
		switch {
		case err == nil:
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			// Readers that got what they wanted may hang up mid-block.
			d.log.Debug("data transfer ended by peer", "op", op, "remote", c.RemoteAddr(), "err", err)
		default:
			d.log.Warn("data transfer failed", "op", op, "remote", c.RemoteAddr(), "err", err)
		}
		if !keep || err != nil {
			return
		}
		read = block
	}
}

// readStatus reads the status a client sends after a read, and says
// whether the connection can carry another operation.
func (d *DataNode) readStatus(c net.Conn, r *bufio.Reader, read *pb.ExtendedBlockProto) bool {
	status := &pb.ClientReadStatusProto{}
	if err := xfer.ReadDelimited(r, status); err != nil {
		return false
	}
	if status.GetStatus() == pb.Status_ERROR_CHECKSUM {
		d.log.Warn("client reports checksum error", "block", read.GetBlockId(), "client", c.RemoteAddr())
	}
	return true
}

// serveOp serves one operation and says whether c can carry another, and
// for a read the block read, whose status the client sends next.
func (d *DataNode) serveOp(op xfer.Op, c net.Conn, r *bufio.Reader) (keepOpen bool, read *pb.ExtendedBlockProto, err error) {
	switch op {
	case xfer.OpWriteBlock:
		req := &pb.OpWriteBlockProto{}
		if err := xfer.ReadDelimited(r, req); err != nil {
			return false, nil, fmt.Errorf("read %s: %w", op, err)
		}
		err := d.writeBlock(req, c, r)
		return err == nil, nil, err // a writer may send its next block on this connection
	case xfer.OpReadBlock:
		req := &pb.OpReadBlockProto{}
		if err := xfer.ReadDelimited(r, req); err != nil {
			return false, nil, fmt.Errorf("read %s: %w", op, err)
		}
		return true, req.GetHeader().GetBaseHeader().GetBlock(), d.readBlock(req, c, r)
	case xfer.OpTransferBlock:
		req := &pb.OpTransferBlockProto{}
		if err := xfer.ReadDelimited(r, req); err != nil {
			return false, nil, fmt.Errorf("read %s: %w", op, err)
		}
		b := req.GetHeader().GetBaseHeader().GetBlock()
		err := d.transferBlock(&pb.BlockTransferCommandProto{Block: &pb.BlockProto{BlockId: b.BlockId,
			GenStamp: b.GenerationStamp, NumBytes: b.NumBytes}, Targets: req.GetTargets()})
		if err != nil {
			respond(c, pb.Status_ERROR, err.Error())
			return false, nil, err
		}
		return true, nil, respond(c, pb.Status_SUCCESS, "")
	case xfer.OpBlockChecksum:
		req := &pb.OpBlockChecksumProto{}
		if err := xfer.ReadDelimited(r, req); err != nil {
			return false, nil, fmt.Errorf("read %s: %w", op, err)
		}
		return true, nil, d.blockChecksum(req, c)
	default:
		respond(c, pb.Status_ERROR_UNSUPPORTED, fmt.Sprintf("godfs datanode does not support %s yet", op))
		return false, nil, fmt.Errorf("unsupported op %s", op)
	}
}

func respond(w io.Writer, st pb.Status, msg string) error {
	return xfer.WriteDelimited(w, &pb.BlockOpResponseProto{Status: st.Enum(), Message: proto.String(msg)})
}

// readBlock streams [offset, offset+len) of a replica in packets, starting
// at the chunk boundary at or before offset, with the stored checksums.
func (d *DataNode) readBlock(req *pb.OpReadBlockProto, c net.Conn, r *bufio.Reader) error {
	b := req.GetHeader().GetBaseHeader().GetBlock()
	rr, err := d.store.open(b.GetBlockId())
	if err != nil {
		respond(c, pb.Status_ERROR, err.Error())
		return err
	}
	defer rr.Close()
	if rr.gs < b.GetGenerationStamp() {
		err := fmt.Errorf("block %d: replica has generation stamp %d, reader wants %d", rr.id, rr.gs, b.GetGenerationStamp())
		respond(c, pb.Status_ERROR, err.Error())
		return err
	}
	off, n := int64(req.GetOffset()), int64(req.GetLen())
	if off < 0 || off > rr.length || n < 0 {
		err := fmt.Errorf("block %d: read of %d bytes at %d outside its %d bytes", rr.id, n, off, rr.length)
		respond(c, pb.Status_ERROR_INVALID, err.Error())
		return err
	}
	// Whole chunks only: the reader verifies each against its CRC.
	end := min(roundUp(off+n, protocol.BytesPerChecksum), rr.length)
	if off+n < off { // overflow: "to the end"
		end = rr.length
	}
	start := off - off%protocol.BytesPerChecksum
	// Up to readBatch bytes are read at a time (data and checksums, one
	// pread each, or the data mapped if cached) and sent as 64 KiB packets
	// in one writev, the data from where it lies, not copied; the answer
	// goes out with the first batch and the closing packet with the last.
	// Warm gets were 9-13% slower with two preads and a writev per 64 KiB
	// packet, and 6-14% slower again with the batch read, not mapped.
	out, err := xfer.AppendDelimited(make([]byte, 0, 256), &pb.BlockOpResponseProto{
		Status: pb.Status_SUCCESS.Enum(),
		ReadOpChecksumInfo: &pb.ReadOpChecksumInfoProto{
			Checksum:    &pb.ChecksumProto{Type: xfer.ChecksumType(rr.tab).Enum(), BytesPerChecksum: proto.Uint32(protocol.BytesPerChecksum)},
			ChunkOffset: proto.Uint64(uint64(start)),
		},
	})
	if err != nil {
		return err
	}
	sp := xfer.NewSpace()
	defer sp.Free()
	batch := min(int64(readBatch), end-start)
	buf, sums := sp.Data()[:batch], sp.Sums()[:xfer.NumChunks(batch)*protocol.ChecksumSize]
	// Mapped data goes only to a TCP connection: its writev copies in the
	// kernel, where a page that cannot be read (a disk error) fails the
	// write with EFAULT instead of killing the datanode with SIGBUS.
	_, mayMap := c.(*net.TCPConn)
	// Every packet's framing, header and checksums, sized for the first
	// batch: a 4 KiB read needs some 100 bytes, not a full batch's 8 KiB.
	heads := make([]byte, 0, int(xfer.NumChunks(batch))*protocol.ChecksumSize+int(batch/readPacketData+2)*xfer.MaxPacketHead)
	bufs := make(net.Buffers, 0, 2*int(batch/readPacketData)+4)
	var seq int64
	for pos := start; pos < end; {
		n := min(batch, end-pos)
		data, mapping, err := rr.sendable(pos, buf[:n], sums[:xfer.NumChunks(n)*protocol.ChecksumSize], mayMap)
		if err != nil {
			return err
		}
		heads, bufs = heads[:0], append(bufs[:0], out)
		for off := int64(0); off < n; off += readPacketData {
			k := min(readPacketData, n-off)
			ns := sums[off/protocol.BytesPerChecksum*protocol.ChecksumSize:][:xfer.NumChunks(k)*protocol.ChecksumSize]
			h := len(heads)
			heads = xfer.AppendPacketHead(heads, &xfer.Packet{Offset: pos + off, Seqno: seq, Data: data[off : off+k], Sums: ns})
			bufs = append(bufs, heads[h:], data[off:off+k])
			seq++
		}
		if pos += n; pos == end {
			h := len(heads)
			heads = xfer.AppendPacketHead(heads, &xfer.Packet{Offset: end, Seqno: seq, Last: true})
			bufs = append(bufs, heads[h:])
		}
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		_, err = bufs.WriteTo(c)
		if mapping != nil {
			unmapData(mapping)
		}
		if err != nil {
			return fmt.Errorf("send block %d: %w", rr.id, err)
		}
		out = out[:0]
	}
	if start == end { // an empty read: the answer and the closing packet
		out = xfer.AppendPacketHead(out, &xfer.Packet{Offset: end, Seqno: seq, Last: true})
		if _, err := c.Write(out); err != nil {
			return fmt.Errorf("send block %d: %w", rr.id, err)
		}
	}
	return nil // the client's status comes before its next operation (serveConn)
}

// blockChecksum answers with the MD5 of the replica's chunk CRCs, the
// per-block part of HDFS's MD5-of-MD5-of-CRC32C file checksum.
func (d *DataNode) blockChecksum(req *pb.OpBlockChecksumProto, c net.Conn) error {
	b := req.GetHeader().GetBlock()
	rr, err := d.store.open(b.GetBlockId())
	if err != nil {
		respond(c, pb.Status_ERROR, err.Error())
		return err
	}
	defer rr.Close()
	h := md5.New()
	if _, err := io.Copy(h, rr.allSums()); err != nil {
		respond(c, pb.Status_ERROR, err.Error())
		return err
	}
	return xfer.WriteDelimited(c, &pb.BlockOpResponseProto{
		Status: pb.Status_SUCCESS.Enum(),
		ChecksumResponse: &pb.OpBlockChecksumResponseProto{
			BytesPerCrc:   proto.Uint32(protocol.BytesPerChecksum),
			CrcPerBlock:   proto.Uint64(uint64(xfer.NumChunks(rr.length))),
			BlockChecksum: h.Sum(nil),
			CrcType:       xfer.ChecksumType(rr.tab).Enum(),
		},
	})
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

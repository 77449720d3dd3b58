package client

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

const (
	dialTimeout = 10 * time.Second
	ioTimeout   = 2 * time.Minute
	// maxInFlight bounds the packets sent but not yet acked by the whole
	// pipeline, and so the memory a write holds (about 64 KiB each).
	maxInFlight = 16
)

func xferAddr(id *pb.DatanodeIDProto) string {
	return net.JoinHostPort(id.GetIpAddr(), strconv.Itoa(int(id.GetXferPort())))
}

func clientHeader(b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string) *pb.ClientOperationHeaderProto {
	return &pb.ClientOperationHeaderProto{
		BaseHeader: &pb.BaseHeaderProto{Block: b, Token: token},
		ClientName: proto.String(clientName),
	}
}

func dialDatanode(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return c, nil
}

// blockReader streams part of one replica, verifying every chunk.
type blockReader struct {
	conn   net.Conn
	r      *bufio.Reader
	tab    *crc32.Table // the replica's checksum type
	skip   int64        // bytes before the requested offset in the first packet
	remain int64        // requested bytes not yet returned
	buf    []byte
	chunk  int64 // chunk number of the next packet's first byte
	done   bool
	addr   string
}

// openBlock asks the datanode at addr for n bytes of block b at off.
func openBlock(addr string, b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string, off, n int64) (*blockReader, error) {
	c, err := dialDatanode(addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	req := &pb.OpReadBlockProto{Header: clientHeader(b, token, clientName),
		Offset: proto.Uint64(uint64(off)), Len: proto.Uint64(uint64(n)), SendChecksums: proto.Bool(true)}
	if err := xfer.WriteOp(c, xfer.OpReadBlock, req); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 128<<10)
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(r, resp); err != nil {
		c.Close()
		return nil, err
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		c.Close()
		return nil, fmt.Errorf("datanode %s: %s: %s", addr, resp.GetStatus(), resp.GetMessage())
	}
	info := resp.GetReadOpChecksumInfo()
	cs := info.GetChecksum()
	tab, err := xfer.ChecksumTable(cs.GetType())
	if err != nil || cs.GetBytesPerChecksum() != protocol.BytesPerChecksum {
		c.Close()
		return nil, fmt.Errorf("datanode %s: unsupported checksum %s/%d", addr, cs.GetType(), cs.GetBytesPerChecksum())
	}
	start := int64(info.GetChunkOffset())
	if start > off || off-start >= protocol.BytesPerChecksum {
		c.Close()
		return nil, fmt.Errorf("datanode %s: read starts at %d for offset %d", addr, start, off)
	}
	return &blockReader{conn: c, r: r, tab: tab, skip: off - start, remain: n, chunk: start / protocol.BytesPerChecksum, addr: addr}, nil
}

func (br *blockReader) Read(p []byte) (int, error) {
	for len(br.buf) == 0 {
		if br.done || br.remain == 0 {
			br.finish()
			return 0, io.EOF
		}
		br.conn.SetDeadline(time.Now().Add(ioTimeout))
		pk, _, err := xfer.ReadPacket(br.r)
		if err != nil {
			return 0, fmt.Errorf("read from datanode %s: %w", br.addr, err)
		}
		if pk.Last || len(pk.Data) == 0 {
			br.done = true
			if br.remain > 0 {
				return 0, fmt.Errorf("datanode %s ended the block %d bytes early: %w", br.addr, br.remain, io.ErrUnexpectedEOF)
			}
			continue
		}
		if err := xfer.VerifyChunks(br.tab, pk.Data, pk.Sums, br.chunk); err != nil {
			return 0, fmt.Errorf("block from datanode %s: %w", br.addr, err)
		}
		br.chunk += xfer.NumChunks(int64(len(pk.Data)))
		data := pk.Data
		if br.skip > 0 {
			k := min(br.skip, int64(len(data)))
			data, br.skip = data[k:], br.skip-k
		}
		if int64(len(data)) > br.remain {
			data = data[:br.remain]
		}
		br.buf = data
	}
	n := copy(p, br.buf)
	br.buf = br.buf[n:]
	br.remain -= int64(n)
	return n, nil
}

// finish tells the datanode the read went well, as HDFS clients do.
func (br *blockReader) finish() {
	if br.conn != nil {
		xfer.WriteDelimited(br.conn, &pb.ClientReadStatusProto{Status: pb.Status_CHECKSUM_OK.Enum()})
	}
}

func (br *blockReader) Close() error {
	if br.conn == nil {
		return nil
	}
	err := br.conn.Close()
	br.conn = nil
	return err
}

// blockWriter streams one block down a pipeline of datanodes.
type blockWriter struct {
	conn   net.Conn
	w      *bufio.Writer
	block  *pb.ExtendedBlockProto
	seqno  int64
	offset int64 // bytes sent so far
	sums   []byte

	window chan struct{} // one token per packet in flight
	acked  chan error    // the ack reader's result
	ackErr error
	// total is the number of packets in the block, known once the last
	// one is sent; the ack reader stops after that many acks.
	total atomic.Int64
}

// errBadLink is a pipeline setup failure naming the datanode at fault.
type errBadLink struct {
	addr string
	err  error
}

func (e *errBadLink) Error() string { return fmt.Sprintf("datanode %s: %v", e.addr, e.err) }
func (e *errBadLink) Unwrap() error { return e.err }

// openPipeline sets up the write pipeline for a new block through the
// located block's datanodes.
func openPipeline(lb *pb.LocatedBlockProto, clientName string) (*blockWriter, error) {
	locs := lb.GetLocs()
	if len(locs) == 0 {
		return nil, fmt.Errorf("block %d has no target datanodes", lb.GetB().GetBlockId())
	}
	first := xferAddr(locs[0].GetId())
	c, err := dialDatanode(first)
	if err != nil {
		return nil, &errBadLink{first, err}
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	req := &pb.OpWriteBlockProto{
		Header:                clientHeader(lb.GetB(), lb.GetBlockToken(), clientName),
		Targets:               locs[1:],
		Stage:                 pb.OpWriteBlockProto_PIPELINE_SETUP_CREATE.Enum(),
		PipelineSize:          proto.Uint32(uint32(len(locs))),
		MinBytesRcvd:          proto.Uint64(0),
		MaxBytesRcvd:          proto.Uint64(0),
		LatestGenerationStamp: proto.Uint64(lb.GetB().GetGenerationStamp()),
		RequestedChecksum: &pb.ChecksumProto{Type: pb.ChecksumTypeProto_CHECKSUM_CRC32C.Enum(),
			BytesPerChecksum: proto.Uint32(protocol.BytesPerChecksum)},
	}
	if err := xfer.WriteOp(c, xfer.OpWriteBlock, req); err != nil {
		c.Close()
		return nil, &errBadLink{first, err}
	}
	r := bufio.NewReaderSize(c, 4<<10)
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(r, resp); err != nil {
		c.Close()
		return nil, &errBadLink{first, err}
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		c.Close()
		bad := resp.GetFirstBadLink()
		if bad == "" {
			bad = first
		}
		return nil, &errBadLink{bad, fmt.Errorf("pipeline setup: %s: %s", resp.GetStatus(), resp.GetMessage())}
	}
	c.SetDeadline(time.Time{})
	bw := &blockWriter{conn: c, w: bufio.NewWriterSize(c, 128<<10), block: proto.Clone(lb.GetB()).(*pb.ExtendedBlockProto),
		window: make(chan struct{}, maxInFlight), acked: make(chan error, 1)}
	go bw.readAcks(r, len(locs))
	return bw, nil
}

// writePacket sends one packet of data; it blocks while maxInFlight
// packets await their acks.
func (bw *blockWriter) writePacket(data []byte, last bool) error {
	select {
	case bw.window <- struct{}{}:
	case err := <-bw.acked:
		bw.ackErr = errOr(err, errors.New("pipeline closed early"))
		return bw.ackErr
	}
	bw.sums = xfer.ChunkSums(xfer.CRC32C, bw.sums[:0], data)
	p := &xfer.Packet{Offset: bw.offset, Seqno: bw.seqno, Last: last, Data: data, Sums: bw.sums}
	bw.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := xfer.WritePacket(bw.w, p); err != nil {
		return fmt.Errorf("send packet to pipeline: %w", err)
	}
	if last || bw.w.Buffered() > 64<<10 {
		if err := bw.w.Flush(); err != nil {
			return fmt.Errorf("send packet to pipeline: %w", err)
		}
	}
	bw.seqno++
	bw.offset += int64(len(data))
	return nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// readAcks consumes acks in order, freeing window slots, until the ack of
// the last packet or an error.
func (bw *blockWriter) readAcks(r *bufio.Reader, pipeline int) {
	var next int64
	for {
		bw.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		ack := &pb.PipelineAckProto{}
		if err := xfer.ReadDelimited(r, ack); err != nil {
			bw.acked <- fmt.Errorf("read ack: %w", err)
			return
		}
		if ack.GetSeqno() == -1 { // reply to a keep-alive
			continue
		}
		if ack.GetSeqno() != next {
			bw.acked <- fmt.Errorf("ack for packet %d, expected %d", ack.GetSeqno(), next)
			return
		}
		for i, st := range xfer.AckStatuses(ack) {
			if st != pb.Status_SUCCESS {
				bw.acked <- fmt.Errorf("datanode %d of %d in the pipeline answered %s", i+1, pipeline, st)
				return
			}
		}
		next++
		<-bw.window
		if next == bw.total.Load() {
			bw.acked <- nil
			return
		}
	}
}

// finish sends the empty last packet, waits for every ack and closes.
func (bw *blockWriter) finish() error {
	defer bw.conn.Close()
	if bw.ackErr != nil {
		return bw.ackErr
	}
	bw.total.Store(bw.seqno + 1)
	if err := bw.writePacket(nil, true); err != nil {
		return err
	}
	select {
	case err := <-bw.acked:
		return err
	case <-time.After(ioTimeout):
		return errors.New("timed out waiting for the pipeline's last ack")
	}
}

func (bw *blockWriter) abort() { bw.conn.Close() }

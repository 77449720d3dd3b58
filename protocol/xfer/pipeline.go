package xfer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol/pb"
)

const (
	// DialTimeout bounds connecting to a datanode.
	DialTimeout = 10 * time.Second
	// IOTimeout bounds each read or write on a data connection.
	IOTimeout = 2 * time.Minute
)

// Addr is a datanode's data transfer address.
func Addr(id *pb.DatanodeIDProto) string {
	return net.JoinHostPort(id.GetIpAddr(), strconv.Itoa(int(id.GetXferPort())))
}

// Dial connects to a datanode's data port.
func Dial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, DialTimeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return c, nil
}

// BadLinkError is a pipeline failure that names the datanode at fault, so
// the writer can exclude it and try again.
type BadLinkError struct {
	Addr string
	Err  error
}

func (e *BadLinkError) Error() string { return fmt.Sprintf("datanode %s: %v", e.Addr, e.Err) }
func (e *BadLinkError) Unwrap() error { return e.Err }

// Pipeline streams one block down a chain of datanodes: packets go to the
// first, which forwards them; acks come back in order. At most maxInFlight
// packets are unacked, which bounds the memory a transfer holds. Used by
// clients writing files and by datanodes copying replicas.
type Pipeline struct {
	conn   net.Conn
	w      *bufio.Writer
	seqno  int64
	offset int64 // bytes sent so far

	window chan struct{} // one token per packet in flight
	acked  chan error    // the ack reader's result
	ackErr error
	// total is the number of packets in the block, known once the last
	// one is sent; the ack reader stops after that many acks.
	total atomic.Int64
}

// OpenPipeline sends op (a WRITE_BLOCK naming the rest of the pipeline in
// its targets) to the datanode at addr and waits for the pipeline to be set
// up. A failure is a *BadLinkError naming the first datanode that failed.
func OpenPipeline(addr string, op *pb.OpWriteBlockProto, maxInFlight int) (*Pipeline, error) {
	c, err := Dial(addr)
	if err != nil {
		return nil, &BadLinkError{addr, err}
	}
	c.SetDeadline(time.Now().Add(IOTimeout))
	if err := WriteOp(c, OpWriteBlock, op); err != nil {
		c.Close()
		return nil, &BadLinkError{addr, err}
	}
	r := bufio.NewReaderSize(c, 4<<10)
	resp := &pb.BlockOpResponseProto{}
	if err := ReadDelimited(r, resp); err != nil {
		c.Close()
		return nil, &BadLinkError{addr, err}
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		c.Close()
		bad := resp.GetFirstBadLink()
		if bad == "" {
			bad = addr
		}
		return nil, &BadLinkError{bad, fmt.Errorf("pipeline setup: %s: %s", resp.GetStatus(), resp.GetMessage())}
	}
	c.SetDeadline(time.Time{})
	p := &Pipeline{conn: c, w: bufio.NewWriterSize(c, 128<<10),
		window: make(chan struct{}, maxInFlight), acked: make(chan error, 1)}
	go p.readAcks(r, 1+len(op.GetTargets()))
	return p, nil
}

// Offset is the number of bytes sent.
func (p *Pipeline) Offset() int64 { return p.offset }

// Write sends one packet of data with its chunk checksums; it blocks while
// the window of unacked packets is full.
func (p *Pipeline) Write(data, sums []byte) error {
	return p.send(data, sums, false)
}

func (p *Pipeline) send(data, sums []byte, last bool) error {
	if p.ackErr != nil {
		return p.ackErr
	}
	select {
	case p.window <- struct{}{}:
	case err := <-p.acked:
		p.ackErr = errOr(err, errors.New("pipeline closed early"))
		return p.ackErr
	}
	pk := &Packet{Offset: p.offset, Seqno: p.seqno, Last: last, Data: data, Sums: sums}
	p.conn.SetWriteDeadline(time.Now().Add(IOTimeout))
	if err := WritePacket(p.w, pk); err != nil {
		return fmt.Errorf("send packet to pipeline: %w", err)
	}
	if last || p.w.Buffered() > 64<<10 {
		if err := p.w.Flush(); err != nil {
			return fmt.Errorf("send packet to pipeline: %w", err)
		}
	}
	p.seqno++
	p.offset += int64(len(data))
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
func (p *Pipeline) readAcks(r *bufio.Reader, pipeline int) {
	var next int64
	for {
		p.conn.SetReadDeadline(time.Now().Add(IOTimeout))
		ack := &pb.PipelineAckProto{}
		if err := ReadDelimited(r, ack); err != nil {
			p.acked <- fmt.Errorf("read ack: %w", err)
			return
		}
		if ack.GetSeqno() == -1 { // reply to a keep-alive
			continue
		}
		if ack.GetSeqno() != next {
			p.acked <- fmt.Errorf("ack for packet %d, expected %d", ack.GetSeqno(), next)
			return
		}
		for i, st := range AckStatuses(ack) {
			if st != pb.Status_SUCCESS {
				p.acked <- fmt.Errorf("datanode %d of %d in the pipeline answered %s", i+1, pipeline, st)
				return
			}
		}
		next++
		<-p.window
		if next == p.total.Load() {
			p.acked <- nil
			return
		}
	}
}

// Finish sends the empty last packet, waits until every datanode has acked
// every packet (the replicas are then durable) and closes the connection.
func (p *Pipeline) Finish() error {
	defer p.conn.Close()
	p.total.Store(p.seqno + 1)
	if err := p.send(nil, nil, true); err != nil {
		return err
	}
	select {
	case err := <-p.acked:
		return err
	case <-time.After(IOTimeout):
		return errors.New("timed out waiting for the pipeline's last ack")
	}
}

// Abort drops the pipeline; the datanodes discard the partial replica.
func (p *Pipeline) Abort() { p.conn.Close() }

// WriteBlockOp builds the WRITE_BLOCK request that creates a new replica of
// b on targets[0] and forwards to the rest.
func WriteBlockOp(b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string, targets []*pb.DatanodeInfoProto, cs pb.ChecksumTypeProto) *pb.OpWriteBlockProto {
	if token == nil {
		token = &pb.TokenProto{Identifier: []byte{}, Password: []byte{}, Kind: proto.String(""), Service: proto.String("")}
	}
	return &pb.OpWriteBlockProto{
		Header: &pb.ClientOperationHeaderProto{
			BaseHeader: &pb.BaseHeaderProto{Block: b, Token: token},
			ClientName: proto.String(clientName),
		},
		Targets:               targets[1:],
		Stage:                 pb.OpWriteBlockProto_PIPELINE_SETUP_CREATE.Enum(),
		PipelineSize:          proto.Uint32(uint32(len(targets))),
		MinBytesRcvd:          proto.Uint64(0),
		MaxBytesRcvd:          proto.Uint64(0),
		LatestGenerationStamp: proto.Uint64(b.GetGenerationStamp()),
		RequestedChecksum:     &pb.ChecksumProto{Type: cs.Enum(), BytesPerChecksum: proto.Uint32(512)},
	}
}

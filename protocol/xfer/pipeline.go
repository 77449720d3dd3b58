package xfer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
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
	conn     net.Conn
	peers    *Peers // where conn goes after a clean finish; nil: closed
	addr     string
	seqno    int64
	offset   int64 // bytes sent so far
	nodes    int   // datanodes in the pipeline
	lastSent bool

	// unacked holds copies of the packets sent but not yet acked, oldest
	// first, so a writer can resend them down a recovered pipeline. It is
	// bounded by the window.
	unackedMu sync.Mutex
	unacked   []*Packet
	acked     int64 // bytes acked by every datanode
	handedOut bool  // Unacked gave the packets away: their space is not reused

	window chan struct{} // one token per packet in flight
	done   chan error    // the ack reader's result
	ackErr error
	// total is the number of packets in the block, known once the last
	// one is sent; the ack reader stops after that many acks.
	total atomic.Int64
}

// OpenPipeline sends op (a WRITE_BLOCK naming the rest of the pipeline in
// its targets) to the datanode at addr and waits for the pipeline to be set
// up. A failure is a *BadLinkError naming the first datanode that failed.
// The first packet will have seqno and offset 0; ResumePipeline continues
// a recovered one. With peers, the pipeline starts on a kept connection
// to addr if there is one, and its connection is kept there after Finish.
func OpenPipeline(peers *Peers, addr string, op *pb.OpWriteBlockProto, maxInFlight int) (*Pipeline, error) {
	return ResumePipeline(peers, addr, op, maxInFlight, 0, 0)
}

// ResumePipeline is OpenPipeline for a pipeline whose first packet has the
// given seqno and block offset (after pipeline recovery).
func ResumePipeline(peers *Peers, addr string, op *pb.OpWriteBlockProto, maxInFlight int, seqno, offset int64) (*Pipeline, error) {
	c, r, err := SendOp(peers, addr, OpWriteBlock, op)
	if err != nil {
		return nil, &BadLinkError{addr, err}
	}
	resp := &pb.BlockOpResponseProto{}
	if err := ReadDelimited(r, resp); err != nil {
		FreeReader(r)
		c.Close()
		return nil, &BadLinkError{addr, err}
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		FreeReader(r)
		c.Close()
		bad := resp.GetFirstBadLink()
		if bad == "" {
			bad = addr
		}
		return nil, &BadLinkError{bad, fmt.Errorf("pipeline setup: %s: %s", resp.GetStatus(), resp.GetMessage())}
	}
	c.SetDeadline(time.Time{})
	p := &Pipeline{conn: c, peers: peers, addr: addr, seqno: seqno, offset: offset, acked: offset,
		nodes: 1 + len(op.GetTargets()), window: make(chan struct{}, maxInFlight), done: make(chan error, 1)}
	go p.readAcks(r, seqno)
	return p, nil
}

// Offset is the number of bytes sent.
func (p *Pipeline) Offset() int64 { return p.offset }

// Write sends one packet of data with its chunk checksums; it blocks while
// the window of unacked packets is full.
func (p *Pipeline) Write(data, sums []byte) error {
	return p.send(retained(data, sums), false)
}

// Send is Write of data and sums that lie in sp (its Data and Sums), which
// the pipeline then keeps instead of a copy: sp is the pipeline's from
// then on, whatever Send returns.
func (p *Pipeline) Send(sp Space, data, sums []byte) error {
	return p.send(&Packet{Data: data, Sums: sums, space: sp.b}, false)
}

// SendLast is Send of the block's last packet: no empty one follows it
// (see Finish), which saves a packet and its ack on every datanode when
// the whole block is one packet, as a small file's is.
func (p *Pipeline) SendLast(sp Space, data, sums []byte) error {
	p.total.Store(p.seqno + 1)
	return p.send(&Packet{Data: data, Sums: sums, space: sp.b}, true)
}

func retained(data, sums []byte) *Packet {
	pk := &Packet{}
	pk.retain(data, sums)
	return pk
}

// send sends pk, whose Data and Sums are its own, as the next packet.
func (p *Pipeline) send(pk *Packet, last bool) error {
	if p.ackErr != nil {
		pk.release()
		return p.ackErr
	}
	// The packet joins the unacked queue before anything can fail, so a
	// writer that recovers the pipeline resends it whatever happens next.
	pk.Offset, pk.Seqno, pk.Last = p.offset, p.seqno, last
	p.unackedMu.Lock()
	p.unacked = append(p.unacked, pk)
	p.unackedMu.Unlock()
	p.seqno++
	p.offset += int64(len(pk.Data))
	p.lastSent = p.lastSent || last
	select {
	case p.window <- struct{}{}:
	case err := <-p.done:
		p.ackErr = errOr(err, &PipelineError{Bad: -1, Err: errors.New("pipeline closed early")})
		return p.ackErr
	}
	p.conn.SetWriteDeadline(time.Now().Add(IOTimeout))
	// Unbuffered: a full packet's data goes from the retained copy to the
	// socket in one writev.
	if err := WritePacket(p.conn, pk); err != nil {
		return &PipelineError{Bad: 0, Err: fmt.Errorf("send packet to pipeline: %w", err)}
	}
	return nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// PipelineError is a failure of a running pipeline. Bad is the index of
// the datanode at fault (0 is the first), or -1 when unknown.
type PipelineError struct {
	Bad int
	Err error
}

func (e *PipelineError) Error() string {
	if e.Bad < 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("datanode %d of the pipeline: %v", e.Bad+1, e.Err)
}
func (e *PipelineError) Unwrap() error { return e.Err }

// readAcks consumes acks in order, freeing window slots, until the ack of
// the last packet or an error.
func (p *Pipeline) readAcks(r *bufio.Reader, next int64) {
	defer FreeReader(r) // only this goroutine reads it
	for {
		p.conn.SetReadDeadline(time.Now().Add(IOTimeout))
		ack := &pb.PipelineAckProto{}
		if err := ReadDelimited(r, ack); err != nil {
			// The first datanode is the one we cannot hear from.
			p.done <- &PipelineError{Bad: 0, Err: fmt.Errorf("read ack: %w", err)}
			return
		}
		if ack.GetSeqno() == -1 { // reply to a keep-alive
			continue
		}
		if ack.GetSeqno() != next {
			p.done <- &PipelineError{Bad: 0, Err: fmt.Errorf("ack for packet %d, expected %d", ack.GetSeqno(), next)}
			return
		}
		for i, st := range AckStatuses(ack) {
			if st != pb.Status_SUCCESS {
				p.done <- &PipelineError{Bad: i, Err: fmt.Errorf("answered %s", st)}
				return
			}
		}
		p.unackedMu.Lock()
		if len(p.unacked) > 0 {
			pk := p.unacked[0]
			p.acked = pk.Offset + int64(len(pk.Data))
			p.unacked = p.unacked[1:]
			if !p.handedOut {
				pk.release()
			}
		}
		p.unackedMu.Unlock()
		next++
		<-p.window
		if next == p.total.Load() {
			p.done <- nil
			return
		}
	}
}

// Unacked returns the packets sent but not acknowledged by every datanode
// and the number of bytes that were; valid after the pipeline failed.
func (p *Pipeline) Unacked() ([]*Packet, int64) {
	p.unackedMu.Lock()
	defer p.unackedMu.Unlock()
	p.handedOut = true
	return append([]*Packet(nil), p.unacked...), p.acked
}

// Drain sends what is buffered and waits until every packet sent so far is
// acknowledged by every datanode (hflush).
func (p *Pipeline) Drain() error {
	if p.ackErr != nil {
		return p.ackErr
	}
	deadline := time.Now().Add(IOTimeout)
	for {
		p.unackedMu.Lock()
		n := len(p.unacked)
		p.unackedMu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case err := <-p.done:
			p.ackErr = errOr(err, &PipelineError{Bad: -1, Err: errors.New("pipeline closed early")})
			return p.ackErr
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return &PipelineError{Bad: -1, Err: errors.New("timed out waiting for acks")}
		}
	}
}

// Rewind moves the next packet's offset back by n bytes: a writer that
// flushed a partial chunk sends that chunk again, whole, next time.
func (p *Pipeline) Rewind(n int64) { p.offset -= n }

// NextSeqno is the seqno the next packet would get.
func (p *Pipeline) NextSeqno() int64 { return p.seqno }

// Finish sends the empty last packet (unless SendLast sent the last one),
// waits until every datanode has acked every packet (the replicas are then
// durable) and closes the connection, or keeps it in the pipeline's Peers
// when all went well.
func (p *Pipeline) Finish() error {
	err := p.finish()
	if err == nil && p.peers != nil {
		p.conn.SetDeadline(time.Time{})
		p.peers.Put(p.addr, p.conn)
	} else {
		p.conn.Close()
	}
	return err
}

func (p *Pipeline) finish() error {
	if p.lastSent { // the last packet was resent already
		return p.wait()
	}
	p.total.Store(p.seqno + 1)
	if err := p.send(&Packet{}, true); err != nil {
		return err
	}
	return p.wait()
}

// SendOp sends op to the datanode at addr, on a connection kept in peers
// if there is one and it still works (else on a new one), and returns the
// connection with a pooled reader for the answer (give it back with
// FreeReader). On a kept connection it waits for the answer to begin: one
// the datanode closed while it was kept fails then, and the op, which
// that datanode never read, goes again on a new connection.
func SendOp(peers *Peers, addr string, op Op, msg proto.Message) (net.Conn, *bufio.Reader, error) {
	if peers != nil {
		if c, owes := peers.Get(addr); c != nil {
			var status []byte
			if owes {
				status = readStatusOK
			}
			c.SetDeadline(time.Now().Add(IOTimeout))
			if err := writeOp(c, status, op, msg); err == nil {
				r := NewReader(c)
				if _, err := r.Peek(1); err == nil {
					return c, r, nil
				}
				FreeReader(r)
			}
			c.Close()
		}
	}
	c, err := Dial(addr)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(IOTimeout))
	if err := WriteOp(c, op, msg); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, NewReader(c), nil
}

func (p *Pipeline) wait() error {
	select {
	case err := <-p.done:
		return err
	case <-time.After(IOTimeout):
		return &PipelineError{Bad: -1, Err: errors.New("timed out waiting for the pipeline's last ack")}
	}
}

// Resend sends a packet again, unchanged (seqno and offset included), down
// a recovered pipeline.
func (p *Pipeline) Resend(pk *Packet) error {
	p.offset, p.seqno = pk.Offset, pk.Seqno
	if pk.Last {
		p.total.Store(pk.Seqno + 1)
	}
	return p.send(retained(pk.Data, pk.Sums), pk.Last)
}

// Abort drops the pipeline. The datanodes keep what they received, for
// pipeline or lease recovery.
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

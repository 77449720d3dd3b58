package hrpc

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

// RemoteError is an error the server returned for a call. It unwraps to the
// godfs sentinel for its exception class, so errors.Is(err, fs.ErrNotExist)
// works across the wire.
type RemoteError struct {
	Class   string // Java exception class name
	Message string
}

func (e *RemoteError) Error() string {
	msg, _, _ := strings.Cut(e.Message, "\n") // Java servers append stack traces
	if msg == "" {
		return e.Class
	}
	return msg
}

func (e *RemoteError) Unwrap() error { return protocol.ErrorForClass(e.Class) }

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("hrpc: client closed")

// ClientOptions configure a Client.
type ClientOptions struct {
	// Protocol is the protocol name sent in the connection context and in
	// every call header.
	Protocol string
	// User is the effective user (SIMPLE auth). Default "godfs".
	User string
	// DialTimeout bounds each connection attempt. Default 5s.
	DialTimeout time.Duration
}

// Client calls one server over one connection, multiplexing concurrent
// calls; it reconnects on the next call after the connection breaks. It is
// safe for concurrent use.
type Client struct {
	addrs    []string
	opts     ClientOptions
	clientID []byte

	mu struct {
		sync.Mutex
		cc     *clientConn // current connection, nil when none
		next   int         // index into addrs for the next dial
		closed bool
	}
}

// NewClient returns a client for the server at addr; a comma-separated list
// is tried in order until one answers. No connection is made until the
// first call.
func NewClient(addr string, opts ClientOptions) *Client {
	if opts.User == "" {
		opts.User = "godfs"
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	id := make([]byte, 16)
	rand.Read(id)
	c := &Client{opts: opts, clientID: id}
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.addrs = append(c.addrs, a)
		}
	}
	return c
}

// Addr returns the address of the server the client talks to.
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.cc != nil {
		return c.mu.cc.addr
	}
	return strings.Join(c.addrs, ",")
}

// Close closes the connection; calls in flight fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.mu.closed = true
	cc := c.mu.cc
	c.mu.cc = nil
	c.mu.Unlock()
	if cc != nil {
		cc.shutdown(ErrClosed)
	}
	return nil
}

// Call invokes method with req and fills resp. Errors returned by the
// server are *RemoteError; connection failures are returned wrapped.
func (c *Client) Call(ctx context.Context, method string, req, resp proto.Message) error {
	cc, err := c.conn(ctx)
	if err != nil {
		return err
	}
	return cc.call(ctx, c.opts.Protocol, method, req, resp)
}

func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, ErrClosed
	}
	if c.mu.cc != nil && !c.mu.cc.broken() {
		return c.mu.cc, nil
	}
	if len(c.addrs) == 0 {
		return nil, errors.New("hrpc: no server address")
	}
	var errs []error
	for range c.addrs {
		addr := c.addrs[c.mu.next%len(c.addrs)]
		cc, err := c.dial(ctx, addr)
		if err == nil {
			c.mu.cc = cc
			return cc, nil
		}
		errs = append(errs, err)
		c.mu.next++
	}
	return nil, errors.Join(errs...)
}

func (c *Client) dial(ctx context.Context, addr string) (*clientConn, error) {
	d := net.Dialer{Timeout: c.opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	hello := append([]byte{}, preamble...)
	hello = append(hello, Version, 0 /* service class */, authNone)
	if _, err := nc.Write(hello); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	hdr := &pb.RpcRequestHeaderProto{
		RpcKind:  pb.RpcKindProto_RPC_PROTOCOL_BUFFER.Enum(),
		RpcOp:    pb.RpcRequestHeaderProto_RPC_FINAL_PACKET.Enum(),
		CallId:   proto.Int32(callIDConnectionContext),
		ClientId: c.clientID,
	}
	ictx := &pb.IpcConnectionContextProto{
		UserInfo: &pb.UserInformationProto{EffectiveUser: proto.String(c.opts.User)},
		Protocol: proto.String(c.opts.Protocol),
	}
	if err := writeFrame(nc, hdr, ictx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	cc := &clientConn{addr: addr, c: nc, clientID: c.clientID}
	cc.mu.pending = map[int32]chan result{}
	go cc.readLoop()
	return cc, nil
}

// resultChans are the channels calls wait on for their result, reused.
var resultChans = sync.Pool{New: func() any { return make(chan result, 1) }}

type result struct {
	body []byte
	buf  *[]byte // body's frame buffer, for the pool once body is parsed
	err  error
}

// clientConn is one live connection; readLoop hands responses to the
// waiting calls by call id.
type clientConn struct {
	addr     string
	c        net.Conn
	clientID []byte
	wmu      sync.Mutex // serializes request frames and guards hdr
	// hdr are the headers of the request being written, kept to be
	// filled in again by the next call rather than allocated each time.
	hdr struct {
		rpc              pb.RpcRequestHeaderProto
		req              pb.RequestHeaderProto
		callID           int32
		protocol, method string
		kind             pb.RpcKindProto
		op               pb.RpcRequestHeaderProto_OperationProto
		version          uint64
	}

	mu struct {
		sync.Mutex
		pending map[int32]chan result
		nextID  int32
		err     error // set once the connection is broken
	}
}

func (cc *clientConn) broken() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.mu.err != nil
}

func (cc *clientConn) call(ctx context.Context, protoName, method string, req, resp proto.Message) error {
	ch := resultChans.Get().(chan result)
	cc.mu.Lock()
	if cc.mu.err != nil {
		err := cc.mu.err
		cc.mu.Unlock()
		return err
	}
	id := cc.mu.nextID
	cc.mu.nextID = (cc.mu.nextID + 1) & 0x7fffffff
	cc.mu.pending[id] = ch
	cc.mu.Unlock()

	cc.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		cc.c.SetWriteDeadline(dl)
	} else {
		cc.c.SetWriteDeadline(time.Time{})
	}
	hdr, reqHdr := cc.headers(id, protoName, method)
	err := writeFrame(cc.c, hdr, reqHdr, req)
	cc.wmu.Unlock()
	if err != nil {
		cc.shutdown(fmt.Errorf("call %s on %s: %w", method, cc.addr, err))
	}
	select {
	case r := <-ch:
		// Nothing sends on ch again: readLoop and shutdown take it out of
		// pending before sending. After a cancel one still might.
		resultChans.Put(ch)
		if r.err != nil {
			return fmt.Errorf("call %s: %w", method, r.err)
		}
		_, err := unmarshalDelimited(r.body, resp)
		putFrameBuf(r.buf) // the parsed message holds copies, not r.body
		if err != nil {
			return fmt.Errorf("call %s: %w", method, err)
		}
		return nil
	case <-ctx.Done():
		cc.mu.Lock()
		delete(cc.mu.pending, id)
		cc.mu.Unlock()
		return fmt.Errorf("call %s on %s: %w", method, cc.addr, ctx.Err())
	}
}

// headers returns the request headers of call id, in cc.hdr; cc.wmu must
// be held until they are written.
func (cc *clientConn) headers(id int32, protoName, method string) (*pb.RpcRequestHeaderProto, *pb.RequestHeaderProto) {
	h := &cc.hdr
	h.callID, h.protocol, h.method = id, protoName, method
	h.kind, h.op, h.version = pb.RpcKindProto_RPC_PROTOCOL_BUFFER, pb.RpcRequestHeaderProto_RPC_FINAL_PACKET, protocol.ClientProtocolVersion
	h.rpc.RpcKind, h.rpc.RpcOp, h.rpc.CallId, h.rpc.ClientId = &h.kind, &h.op, &h.callID, cc.clientID
	h.req.MethodName, h.req.DeclaringClassProtocolName, h.req.ClientProtocolVersion = &h.method, &h.protocol, &h.version
	return &h.rpc, &h.req
}

func (cc *clientConn) readLoop() {
	r := bufio.NewReaderSize(cc.c, 64<<10)
	for {
		bp := framePool.Get().(*[]byte)
		frame, err := readFrameInto(r, bp)
		if err != nil {
			cc.shutdown(fmt.Errorf("connection to %s lost: %w", cc.addr, err))
			return
		}
		hdr, rest, err := parseAnswerHeader(frame)
		if err != nil {
			cc.shutdown(fmt.Errorf("bad response from %s: %w", cc.addr, err))
			return
		}
		id := int32(hdr.callID)
		var res result
		switch hdr.status {
		case pb.RpcResponseHeaderProto_SUCCESS:
			res.body, res.buf = rest, bp
		default:
			res.err = &RemoteError{Class: hdr.class, Message: hdr.msg} // copies
			putFrameBuf(bp)
		}
		if hdr.status == pb.RpcResponseHeaderProto_FATAL {
			cc.shutdown(res.err)
			return
		}
		cc.mu.Lock()
		ch := cc.mu.pending[id]
		delete(cc.mu.pending, id)
		cc.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}
}

// shutdown marks the connection broken and fails every pending call.
func (cc *clientConn) shutdown(err error) {
	cc.mu.Lock()
	if cc.mu.err == nil {
		cc.mu.err = err
	}
	pending := cc.mu.pending
	cc.mu.pending = map[int32]chan result{}
	cc.mu.Unlock()
	cc.c.Close()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

// Package hrpc implements Hadoop RPC (the "hrpc" wire protocol, version 9,
// SIMPLE authentication, protobuf engine): a Server that dispatches calls by
// method name and a Client that multiplexes concurrent calls over one
// connection. It is the transport for both the ClientProtocol that HDFS
// clients speak and godfs's own datanode protocol.
//
// A connection starts with the 7-byte preamble "hrpc", version, service
// class and auth protocol, then a frame carrying the IpcConnectionContext.
// Every later frame is a call: a 4-byte big-endian length, then the
// varint-delimited RpcRequestHeaderProto, RequestHeaderProto and request.
// Responses carry the call id and may come back in any order.
package hrpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol/internal/protoenc"
)

const (
	// Version is the Hadoop RPC version godfs speaks.
	Version = 9
	// authNone is the auth protocol byte of SIMPLE authentication.
	authNone = 0
	// MaxFrame bounds one RPC frame (Hadoop's ipc.maximum.data.length).
	MaxFrame = 64 << 20

	// Special call ids Hadoop uses before and beside real calls.
	callIDConnectionContext = -3
	callIDPing              = -4
)

var preamble = []byte{'h', 'r', 'p', 'c'}

// ErrFrameTooLarge is returned for frames bigger than MaxFrame.
var ErrFrameTooLarge = errors.New("hrpc: frame too large")

// writeFrame writes msgs as one length-prefixed frame of varint-delimited
// messages, marshalled straight into a pooled buffer: one write, no
// allocation a message (calls are small and many).
func writeFrame(w io.Writer, msgs ...proto.Message) error {
	bp := framePool.Get().(*[]byte)
	defer putFrameBuf(bp)
	frame := append((*bp)[:0], 0, 0, 0, 0)
	for _, m := range msgs {
		var err error
		if frame, err = protoenc.AppendDelimited(frame, m); err != nil {
			return fmt.Errorf("hrpc: marshal %T: %w", m, err)
		}
	}
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	*bp = frame
	_, err := w.Write(frame)
	return err
}

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// putFrameBuf returns a frame buffer to the pool unless a big frame (a
// block report) grew it: those are rare and would pin their memory.
func putFrameBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		framePool.Put(bp)
	}
}

// readFrame reads one length-prefixed frame.
func readFrame(r *bufio.Reader) ([]byte, error) {
	var b []byte
	return readFrameInto(r, &b)
}

// readFrameInto reads one length-prefixed frame into *bp, growing it if
// needed (a pooled buffer: see putFrameBuf).
func readFrameInto(r *bufio.Reader, bp *[]byte) ([]byte, error) {
	// Peeked, not read into an array, which would escape to the heap
	// through io.ReadFull: an allocation a frame.
	hdr, err := r.Peek(4)
	if err != nil {
		if len(hdr) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr)
	r.Discard(4)
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if uint32(cap(*bp)) < n {
		*bp = make([]byte, n)
	}
	buf := (*bp)[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("hrpc: short frame: %w", err)
	}
	return buf, nil
}

// nextDelimited splits one varint-delimited message off buf.
func nextDelimited(buf []byte) (msg, rest []byte, err error) {
	n, l := protowire.ConsumeVarint(buf)
	if l < 0 || uint64(len(buf)-l) < n {
		return nil, nil, errors.New("hrpc: malformed delimited message")
	}
	return buf[l : l+int(n)], buf[l+int(n):], nil
}

// unmarshalDelimited parses the next delimited message of buf into m.
func unmarshalDelimited(buf []byte, m proto.Message) ([]byte, error) {
	b, rest, err := nextDelimited(buf)
	if err != nil {
		return nil, err
	}
	if err := protoenc.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("hrpc: unmarshal %T: %w", m, err)
	}
	return rest, nil
}

package xfer

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol/pb"
)

// received starts a listener that hands what each connection sent, up to
// its close, to the returned channel. It answers the first bytes with one
// of its own, as a datanode answers an operation (SendOp waits for it).
func received(t *testing.T) (string, <-chan []byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan []byte, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				first := make([]byte, 4096)
				n, _ := c.Read(first)
				if n > 0 {
					c.Write([]byte{0})
				}
				rest, _ := io.ReadAll(c)
				got <- append(first[:n], rest...)
			}()
		}
	}()
	return ln.Addr().String(), got
}

func dial(t *testing.T, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func next(t *testing.T, got <-chan []byte) []byte {
	select {
	case b := <-got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no connection closed")
		return nil
	}
}

// A connection kept after a read carries the read's status to the
// datanode: with the next operation, on the same connection, or before
// it is closed (by Close, or when the pool is full); one kept after a
// write owes nothing.
func TestKeptReadOwesItsStatus(t *testing.T) {
	status := func(t *testing.T, r *bufio.Reader) {
		t.Helper()
		st := &pb.ClientReadStatusProto{}
		if err := ReadDelimited(r, st); err != nil || st.GetStatus() != pb.Status_CHECKSUM_OK {
			t.Fatalf("read status %v (%v), want CHECKSUM_OK", st, err)
		}
	}

	t.Run("next operation", func(t *testing.T) {
		addr, got := received(t)
		var p Peers
		p.PutAfterRead(addr, dial(t, addr))
		req := &pb.OpReadBlockProto{Header: &pb.ClientOperationHeaderProto{ClientName: proto.String("c"),
			BaseHeader: &pb.BaseHeaderProto{Block: &pb.ExtendedBlockProto{PoolId: proto.String("p"), BlockId: proto.Uint64(7),
				GenerationStamp: proto.Uint64(1)}}}, Offset: proto.Uint64(0), Len: proto.Uint64(10)}
		c, r, err := SendOp(&p, addr, OpReadBlock, req)
		if err != nil {
			t.Fatal(err)
		}
		FreeReader(r)
		c.Close()
		in := bufio.NewReader(bytes.NewReader(next(t, got)))
		status(t, in)
		op, err := ReadOpHeader(in)
		back := &pb.OpReadBlockProto{}
		if err != nil || op != OpReadBlock || ReadDelimited(in, back) != nil || back.GetHeader().GetBaseHeader().GetBlock().GetBlockId() != 7 {
			t.Fatalf("after the status: op %v (%v), request %v", op, err, back)
		}
		if in.Buffered() != 0 {
			t.Fatalf("%d bytes more", in.Buffered())
		}
	})

	t.Run("close", func(t *testing.T) {
		addr, got := received(t)
		var p Peers
		p.PutAfterRead(addr, dial(t, addr))
		p.Close()
		b := next(t, got)
		if !bytes.Equal(b, readStatusOK) {
			t.Fatalf("sent %x before closing, want the read status %x", b, readStatusOK)
		}
		p.PutAfterRead(addr, dial(t, addr)) // put after Close: closed at once
		if b := next(t, got); !bytes.Equal(b, readStatusOK) {
			t.Fatalf("sent %x, want the read status %x", b, readStatusOK)
		}
	})

	t.Run("pool full", func(t *testing.T) {
		addr, got := received(t)
		var p Peers
		defer p.Close()
		for range maxIdlePerDatanode {
			p.Put(addr, dial(t, addr))
		}
		p.PutAfterRead(addr, dial(t, addr))
		if b := next(t, got); !bytes.Equal(b, readStatusOK) {
			t.Fatalf("sent %x, want the read status %x", b, readStatusOK)
		}
	})

	t.Run("after a write", func(t *testing.T) {
		addr, got := received(t)
		var p Peers
		p.Put(addr, dial(t, addr))
		c, owes := p.Get(addr)
		if c == nil || owes {
			t.Fatalf("Get: %v, owes a status %v; want the connection, owing nothing", c, owes)
		}
		p.Put(addr, c)
		p.Close()
		if b := next(t, got); len(b) != 0 {
			t.Fatalf("sent %x, want nothing", b)
		}
	})
}

// Get closes the connections that waited too long, sending what they
// owe, and returns the newest of the others.
func TestGetClosesExpired(t *testing.T) {
	addr, got := received(t)
	var p Peers
	defer p.Close()
	p.put(addr, idlePeer{dial(t, addr), time.Now().Add(-2 * peerIdleTime), true})
	p.put(addr, idlePeer{dial(t, addr), time.Now().Add(-peerIdleTime), false})
	older, newest := dial(t, addr), dial(t, addr)
	p.Put(addr, older)
	p.PutAfterRead(addr, newest)
	if c, owes := p.Get(addr); c != newest || !owes {
		t.Fatalf("Get: %v (owes a status: %v), want the newest, owing one", c, owes)
	}
	sent := [][]byte{next(t, got), next(t, got)}
	if !slices.ContainsFunc(sent, func(b []byte) bool { return bytes.Equal(b, readStatusOK) }) ||
		!slices.ContainsFunc(sent, func(b []byte) bool { return len(b) == 0 }) {
		t.Fatalf("the expired sent %x, want the read status from one and nothing from the other", sent)
	}
	if c, _ := p.Get(addr); c != older {
		t.Fatalf("second Get: %v, want the older fresh one", c)
	}
	if c, _ := p.Get(addr); c != nil {
		t.Fatalf("third Get: %v, want none", c)
	}
	newest.Close()
	older.Close()
}

// stuckConn's writes wait until released, like those to a datanode that
// stopped reading.
type stuckConn struct {
	net.Conn
	writing, release chan struct{}
}

func (c stuckConn) Write(b []byte) (int, error) {
	close(c.writing)
	<-c.release
	return len(b), nil
}

// A connection's owed status is written outside Peers' lock: a datanode
// that stopped reading holds up no other Get or Put.
func TestStuckStatusHoldsNoOneUp(t *testing.T) {
	addr, _ := received(t)
	stuck := stuckConn{dial(t, addr), make(chan struct{}), make(chan struct{})}
	defer close(stuck.release)
	var p Peers
	p.PutAfterRead("stuck:9866", stuck)
	go p.Close()
	<-stuck.writing
	done := make(chan struct{})
	c := dial(t, addr)
	go func() {
		p.Get(addr)
		p.Put(addr, c) // after Close: closed at once
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Get and Put waited for another connection's write")
	}
}

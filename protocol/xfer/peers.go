package xfer

import (
	"net"
	"slices"
	"sync"
	"time"
)

// Peers keeps data connections to datanodes after an operation that ended
// cleanly (a read, or a pipeline's whole block), for the next operation on
// the same datanode, as HDFS's PeerCache does for reads: reading or
// writing a small file then costs no connect, accept, or new connection
// goroutine on the datanode. A kept connection may have been closed by
// the datanode meanwhile: a caller whose operation fails on one before
// any answer tries again on a new connection. The zero value is ready;
// it is safe for concurrent use.
//
// A connection kept after a whole read owes the datanode the reader's
// status (CHECKSUM_OK, the read went well). It is sent in the same write
// as the connection's next operation (SendOp), or just before the
// connection is closed, rather than on its own: a write less for the
// reader, and on the datanode a read and a wake-up less, in each small
// file read.
type Peers struct {
	mu     sync.Mutex
	idle   map[string][]idlePeer // by datanode address, oldest first
	closed bool
}

type idlePeer struct {
	conn       net.Conn
	since      time.Time
	owesStatus bool // a read's status, readStatusOK
}

// close closes the connection, sending the read status it owes first.
func (ip idlePeer) close() {
	if ip.owesStatus {
		ip.conn.SetWriteDeadline(time.Now().Add(time.Second))
		ip.conn.Write(readStatusOK)
	}
	ip.conn.Close()
}

const (
	// maxIdlePerDatanode bounds the connections kept per datanode.
	maxIdlePerDatanode = 8
	// peerIdleTime is how long a kept connection may wait: less than the
	// datanode's idle timeout (a minute), so it is not closed under us.
	peerIdleTime = 30 * time.Second
)

// Get returns a kept connection to addr, or nil, and whether it owes the
// datanode a read's status. SendOp, the way operations go out on kept
// connections, sends the status in the same write as its operation.
func (p *Peers) Get(addr string) (c net.Conn, owesStatus bool) {
	p.mu.Lock()
	list := p.idle[addr]
	// Oldest first, so the expired ones are a prefix.
	fresh := slices.IndexFunc(list, func(ip idlePeer) bool { return time.Since(ip.since) < peerIdleTime })
	if fresh < 0 {
		fresh = len(list)
	}
	expired := slices.Clone(list[:fresh])
	list = list[fresh:]
	var got idlePeer
	if len(list) > 0 {
		got, list = list[len(list)-1], list[:len(list)-1]
	}
	if len(list) == 0 {
		delete(p.idle, addr)
	} else {
		p.idle[addr] = list
	}
	p.mu.Unlock()
	closeAll(expired)
	return got.conn, got.owesStatus
}

// Put keeps c, a connection to addr with no operation in progress.
func (p *Peers) Put(addr string, c net.Conn) { p.put(addr, idlePeer{c, time.Now(), false}) }

// PutAfterRead keeps c, a connection to addr on which a block was read
// whole, owing the datanode the read's status (CHECKSUM_OK).
func (p *Peers) PutAfterRead(addr string, c net.Conn) { p.put(addr, idlePeer{c, time.Now(), true}) }

func (p *Peers) put(addr string, ip idlePeer) {
	p.mu.Lock()
	if p.closed || len(p.idle[addr]) >= maxIdlePerDatanode {
		p.mu.Unlock()
		ip.close()
		return
	}
	if p.idle == nil {
		p.idle = map[string][]idlePeer{}
	}
	p.idle[addr] = append(p.idle[addr], ip)
	p.mu.Unlock()
}

// Idle is the number of connections kept.
func (p *Peers) Idle() (n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// Close closes every kept connection; later ones are closed when put.
func (p *Peers) Close() {
	p.mu.Lock()
	idle := p.idle
	p.closed, p.idle = true, nil
	p.mu.Unlock()
	for _, list := range idle {
		closeAll(list)
	}
}

// closeAll closes kept connections, outside Peers' lock: each may write
// the status it owes, and a datanode that stopped reading would hold
// every other Get and Put behind that write until its deadline.
func closeAll(list []idlePeer) {
	for _, ip := range list {
		ip.close()
	}
}

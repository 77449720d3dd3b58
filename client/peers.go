package client

import (
	"net"
	"sync"
	"time"
)

// peers keeps data connections to datanodes after a read that ended
// cleanly, for the next read from the same datanode, as HDFS's PeerCache
// does: reading a small file then costs no connect, accept, or new
// connection goroutine on the datanode.
type peers struct {
	mu     sync.Mutex
	idle   map[string][]idlePeer // by datanode address, oldest first
	closed bool
}

type idlePeer struct {
	conn  net.Conn
	since time.Time
}

const (
	// maxIdlePerDatanode bounds the connections kept per datanode.
	maxIdlePerDatanode = 8
	// peerIdleTime is how long a kept connection may wait: less than the
	// datanode's idle timeout (a minute), so it is not closed under us.
	peerIdleTime = 30 * time.Second
)

// get returns a kept connection to addr, or nil.
func (p *peers) get(addr string) net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[addr]
	for len(list) > 0 {
		last := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(last.since) < peerIdleTime {
			p.idle[addr] = list
			return last.conn
		}
		last.conn.Close()
	}
	delete(p.idle, addr)
	return nil
}

// put keeps c, a connection to addr with no operation in progress.
func (p *peers) put(addr string, c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[addr]) >= maxIdlePerDatanode {
		c.Close()
		return
	}
	if p.idle == nil {
		p.idle = map[string][]idlePeer{}
	}
	p.idle[addr] = append(p.idle[addr], idlePeer{c, time.Now()})
}

// close closes every kept connection; later ones are closed when put.
func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, list := range p.idle {
		for _, ip := range list {
			ip.conn.Close()
		}
	}
	p.idle = nil
}

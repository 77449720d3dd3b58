package datanode

import (
	"sync"

	"github.com/godfs/godfs/protocol/pb"
)

// ibrQueue holds what the master has not been told of yet: replicas
// received, deleted and found corrupt, each kind in the order it happened.
type ibrQueue struct {
	mu                         sync.Mutex
	received, deleted, corrupt []*pb.BlockProto
}

// add queues one entry of each kind that is not nil.
func (q *ibrQueue) add(received, deleted, corrupt *pb.BlockProto) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if received != nil {
		q.received = append(q.received, received)
	}
	if deleted != nil {
		q.deleted = append(q.deleted, deleted)
	}
	if corrupt != nil {
		q.corrupt = append(q.corrupt, corrupt)
	}
}

// take removes up to n entries from the front of the queue, received
// ones first: one call's worth. A volume that fails with millions of
// replicas would otherwise make one report bigger than an RPC may be,
// which the master refuses, and every report after it would wait behind
// it for ever.
func (q *ibrQueue) take(n int) (rcv, del, bad []*pb.BlockProto) {
	q.mu.Lock()
	defer q.mu.Unlock()
	rcv, q.received = front(q.received, n)
	del, q.deleted = front(q.deleted, n-len(rcv))
	bad, q.corrupt = front(q.corrupt, n-len(rcv)-len(del))
	return rcv, del, bad
}

// putBack queues again what take gave (a call that failed), ahead of
// what was queued since.
func (q *ibrQueue) putBack(rcv, del, bad []*pb.BlockProto) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.received = append(rcv, q.received...)
	q.deleted = append(del, q.deleted...)
	q.corrupt = append(bad, q.corrupt...)
}

// front splits s into its first n entries (at most) and the rest. The
// first part's capacity ends at its length, so that appending to it
// never writes over the rest; the rest is nil once empty, letting the
// backing array go.
func front(s []*pb.BlockProto, n int) (head, rest []*pb.BlockProto) {
	n = min(n, len(s))
	if n == len(s) {
		return s, nil
	}
	return s[:n:n], s[n:]
}

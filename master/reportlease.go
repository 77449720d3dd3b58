package master

import (
	"math/rand/v2"
	"time"
)

// reportLeases admit full block reports a few at a time, as HDFS's block
// report leases do. A datanode with a report to send asks for a lease in
// its heartbeat and sends the report, every part of it, under the lease it
// got. Without them, every datanode of a big cluster reports at once after
// the master restarts, and the master holds all those decoded requests
// together (10,000 datanodes of 300,000 replicas: tens of GB); with them,
// at most max reports are in flight and the rest wait a heartbeat or a
// few, while the master ingests reports as fast as before (it is one lock).
type reportLeases struct {
	max  int
	ttl  time.Duration // a lease not used for this long is taken back
	next uint64        // the next lease id
	held map[string]reportLease
}

// reportLease is a datanode's permission to send one full report.
type reportLease struct {
	id      uint64
	expires time.Time
}

func newReportLeases(max int, ttl time.Duration) *reportLeases {
	// Ids start at a random point so that a lease from before a restart of
	// the master is not taken for one of this run.
	return &reportLeases{max: max, ttl: ttl, next: rand.Uint64()>>1 + 1, held: map[string]reportLease{}}
}

// grant returns a lease for datanode uuid (the one it holds, if it does),
// or 0 when max leases are out.
func (l *reportLeases) grant(uuid string, now time.Time) uint64 {
	if r, ok := l.held[uuid]; ok && now.Before(r.expires) {
		return r.id
	}
	for u, r := range l.held {
		if !now.Before(r.expires) {
			delete(l.held, u)
		}
	}
	if len(l.held) >= l.max {
		return 0
	}
	id := l.next
	l.next++
	l.held[uuid] = reportLease{id: id, expires: now.Add(l.ttl)}
	return id
}

// use reports whether datanode uuid holds lease id, and keeps the lease
// for another ttl: a report in many parts holds it while parts come.
func (l *reportLeases) use(uuid string, id uint64, now time.Time) bool {
	r, ok := l.held[uuid]
	if !ok || r.id != id || !now.Before(r.expires) {
		return false
	}
	l.held[uuid] = reportLease{id: id, expires: now.Add(l.ttl)}
	return true
}

// release takes back datanode uuid's lease: its report is done, or it
// re-registered or died.
func (l *reportLeases) release(uuid string) { delete(l.held, uuid) }

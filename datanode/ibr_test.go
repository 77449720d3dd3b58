package datanode

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol/pb"
)

func blocks(from, n int) []*pb.BlockProto {
	var bs []*pb.BlockProto
	for i := range n {
		bs = append(bs, &pb.BlockProto{BlockId: proto.Uint64(uint64(from + i))})
	}
	return bs
}

func ids(bs []*pb.BlockProto) (out []uint64) {
	for _, b := range bs {
		out = append(out, b.GetBlockId())
	}
	return out
}

func sameIDs(t *testing.T, what string, got, want []*pb.BlockProto) {
	t.Helper()
	g, w := ids(got), ids(want)
	if len(g) != len(w) {
		t.Fatalf("%s: got blocks %v, want %v", what, g, w)
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s: got blocks %v, want %v", what, g, w)
		}
	}
}

// A queue bigger than one call goes in calls of at most max entries, in
// order, and what a failed call gave back goes again first.
func TestIBRQueueGoesInParts(t *testing.T) {
	var q ibrQueue
	rcv, del, bad := blocks(100, 4), blocks(200, 5), blocks(300, 2)
	for _, b := range rcv {
		q.add(b, nil, nil)
	}
	for _, b := range del {
		q.add(nil, b, nil)
	}
	for _, b := range bad {
		q.add(nil, nil, b)
	}

	r, d, c := q.take(3)
	sameIDs(t, "first call, received", r, rcv[:3])
	sameIDs(t, "first call, deleted", d, nil)
	sameIDs(t, "first call, corrupt", c, nil)

	r, d, c = q.take(3)
	sameIDs(t, "second call, received", r, rcv[3:])
	sameIDs(t, "second call, deleted", d, del[:2])
	sameIDs(t, "second call, corrupt", c, nil)

	// The call fails; meanwhile one more replica arrives.
	late := blocks(400, 1)[0]
	q.add(late, nil, nil)
	q.putBack(r, d, c)

	r, d, c = q.take(100)
	sameIDs(t, "after the failure, received", r, append(rcv[3:4:4], late))
	sameIDs(t, "after the failure, deleted", d, del)
	sameIDs(t, "after the failure, corrupt", c, bad)

	if r, d, c := q.take(100); len(r)+len(d)+len(c) != 0 {
		t.Fatalf("queue not empty after taking everything: %v %v %v", ids(r), ids(d), ids(c))
	}
}

package master

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"unsafe"

	"github.com/godfs/godfs/master/idtable"
	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol/pb"
	"google.golang.org/protobuf/proto"
)

// TestBlockMapAgreesWithModel drives the block map with random adds,
// replica reports and removals, node deaths and frees, on more nodes than
// a block holds inline, and checks after every step that it agrees with
// a plain model: each block's replicas, each node's blocks (the reverse
// lists and the positions linking the two), the counts and each node's
// bytes, counted from the lengths the namespace (here a map) gives, which
// change as files are written. It runs twice: with block ids straddling a page of the block
// table, and straddling a change in their high 32 bits (a second group in
// each node's list).
func TestBlockMapAgreesWithModel(t *testing.T) {
	for _, first := range []uint64{namespace.FirstBlockID + idtable.PageSize - 5, 1<<32 - 3000} {
		t.Run(fmt.Sprintf("from-%d", first), func(t *testing.T) { blockMapAgreesWithModel(t, first) })
	}
}

func blockMapAgreesWithModel(t *testing.T, nextID uint64) {
	rng := rand.New(rand.NewPCG(1, 2))
	src := testBlocks{}
	bm := newBlockMap(src)
	bm.rescanFrom = 0
	const nodes = 6
	var uuids []string
	for i := range nodes {
		u := fmt.Sprintf("dn%d", i)
		uuids = append(uuids, u)
		bm.register(&datanode{uuid: u})
	}
	model := map[uint64]map[string]bool{} // block -> holders -> marked by a full report
	var ids []uint64
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 2 || len(ids) == 0: // a new block, on up to 2 pipeline targets
			id := nextID
			nextID += 1 + uint64(rng.IntN(3))
			targets := uuids[:rng.IntN(3)]
			src[id] = namespace.Block{ID: id, GenStamp: 1}
			bm.add(42, src[id], targets)
			model[id] = map[string]bool{}
			for _, u := range targets {
				model[id][u] = false
			}
			ids = append(ids, id)
		case op < 5: // a block's length changes in the namespace
			id := ids[rng.IntN(len(ids))]
			b := src[id]
			n := uint64(rng.IntN(4)) << 20
			bm.resized(namespace.Resize{ID: id, Delta: int64(n) - int64(b.Len)})
			b.Len = n
			src[id] = b
		case op < 6: // a replica reported, possibly again, with a length that may differ
			id, u := ids[rng.IntN(len(ids))], uuids[rng.IntN(nodes)]
			bm.reported(bm.nodes[u], id, 1, uint64(rng.IntN(4))<<20)
			if _, ok := model[id][u]; !ok {
				model[id][u] = false
			}
			if rng.IntN(2) == 0 { // as a full report does
				bm.nodes[u].blocks.mark(id, bm.ref(id, bm.blocks.Ptr(id), bm.nodes[u]).pos())
				model[id][u] = true
			}
		case op < 8: // a replica dropped, possibly one that is not there
			id, u := ids[rng.IntN(len(ids))], uuids[rng.IntN(nodes)]
			bm.removeReplica(id, u)
			delete(model[id], u)
		case op < 9: // blocks freed
			i := rng.IntN(len(ids))
			bm.free([]namespace.Block{src[ids[i]]})
			delete(src, ids[i])
			delete(model, ids[i])
			ids = slices.Delete(ids, i, i+1)
		case rng.IntN(2) == 0: // a full report starts: no replica of a node marked
			u := uuids[rng.IntN(nodes)]
			bm.nodes[u].blocks.clearMarks()
			for _, holders := range model {
				if _, ok := holders[u]; ok {
					holders[u] = false
				}
			}
		default: // a node dies and comes back empty
			u := uuids[rng.IntN(nodes)]
			bm.nodeDead(bm.nodes[u])
			bm.register(&datanode{uuid: u})
			for _, holders := range model {
				delete(holders, u)
			}
		}
		checkBlockMap(t, step, bm, model, src)
	}
}

// testBlocks stands in for the namespace as the block map's blockSource.
type testBlocks map[uint64]namespace.Block

func (tb testBlocks) Block(_, id uint64) (namespace.Block, bool) {
	b, ok := tb[id]
	return b, ok
}

func checkBlockMap(t *testing.T, step int, bm *blockMap, model map[uint64]map[string]bool, src testBlocks) {
	t.Helper()
	if bm.blocks.Len() != len(model) {
		t.Fatalf("step %d: %d blocks in the map, model has %d", step, bm.blocks.Len(), len(model))
	}
	withReplicas := 0
	reverse := map[string]map[uint64]bool{} // holder -> blocks
	unmarked := map[string][]uint64{}       // holder -> blocks not marked
	for id, holders := range model {
		bi := bm.blocks.Ptr(id)
		if bi == nil {
			t.Fatalf("step %d: block %d missing", step, id)
		}
		var got []string
		for _, dn := range bm.replicas(id) {
			got = append(got, dn.uuid)
		}
		var want []string
		for u, marked := range holders {
			want = append(want, u)
			if !marked {
				unmarked[u] = append(unmarked[u], id)
			}
			if reverse[u] == nil {
				reverse[u] = map[uint64]bool{}
			}
			reverse[u][id] = true
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) || bm.numReplicas(id, bi) != len(want) {
			t.Fatalf("step %d: block %d held by %v (%d), want %v", step, id, got, bm.numReplicas(id, bi), want)
		}
		if len(want) > 0 {
			withReplicas++
		}
	}
	if bm.withReplicas != withReplicas {
		t.Fatalf("step %d: %d blocks with replicas counted, want %d", step, bm.withReplicas, withReplicas)
	}
	for u, dn := range bm.nodes {
		if dn.blocks.Len() != len(reverse[u]) {
			t.Fatalf("step %d: %s lists %d blocks, holds %d", step, u, dn.blocks.Len(), len(reverse[u]))
		}
		var bytes int64
		listed := 0
		for _, g := range dn.blocks.groups {
			if len(g.marked) != (len(g.lows)+63)/64 || len(g.lows)%64 != 0 && g.marked[len(g.marked)-1]>>(len(g.lows)%64) != 0 {
				t.Fatalf("step %d: %s has %d mark words for %d blocks, or marks past the last", step, u, len(g.marked), len(g.lows))
			}
			for pos, low := range g.lows {
				id := uint64(g.high)<<32 | uint64(low)
				r := bm.ref(id, bm.blocks.Ptr(id), dn)
				if !reverse[u][id] || r == nil || r.pos() != uint32(pos) {
					t.Fatalf("step %d: %s lists block %d at %d, which it does not hold there", step, u, id, pos)
				}
				bytes += int64(src[id].Len)
				listed++
			}
		}
		if all := slices.Collect(dn.blocks.All()); listed != len(reverse[u]) || len(all) != listed {
			t.Fatalf("step %d: %s has %d blocks in its groups and yields %d, holds %d", step, u, listed, len(all), len(reverse[u]))
		}
		got := slices.Sorted(dn.blocks.Unmarked())
		slices.Sort(unmarked[u])
		if !slices.Equal(got, unmarked[u]) {
			t.Fatalf("step %d: %s has %v unmarked, want %v", step, u, got, unmarked[u])
		}
		if dn.bytes != bytes {
			t.Fatalf("step %d: %s counts %d bytes, holds %d", step, u, dn.bytes, bytes)
		}
	}
}

// A block's entry keeps its file id in 48 bits and a replica's position in
// two halves: both come back whole, and the entry is 24 bytes.
func TestBlockInfoPacking(t *testing.T) {
	if size := unsafe.Sizeof(blockInfo{}); size != 24 {
		t.Fatalf("blockInfo is %d bytes, want 24", size)
	}
	for _, id := range []uint64{0, 1, namespace.RootInodeID + 1, 0x0001_0002_0003, 0xfedc_ba98_7654, namespace.MaxInodeID} {
		if bi := newBlockInfo(id); bi.fileID() != id {
			t.Fatalf("file id %#x kept as %#x", id, bi.fileID())
		}
	}
	for _, pos := range []uint32{0, 1, 0xffff, 0x1_0000, 0x1234_5678, math.MaxUint32} {
		r := newReplicaRef(maxNodes, pos)
		if r.pos() != pos || r.node != maxNodes {
			t.Fatalf("replica at %#x on node %d kept as %#x on %d", pos, maxNodes, r.pos(), r.node)
		}
		if r.setPos(^pos); r.pos() != ^pos {
			t.Fatalf("position %#x set, %#x kept", ^pos, r.pos())
		}
	}
}

// Datanode indexes are 16 bits: the 65,536th node to register is refused,
// and one registered before may register again.
func TestRegisterRefusesNodesBeyondTheLastIndex(t *testing.T) {
	bm := newBlockMap(testBlocks{})
	for i := range maxNodes {
		if err := bm.register(&datanode{uuid: strconv.Itoa(i)}); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if err := bm.register(&datanode{uuid: "one more"}); err == nil {
		t.Fatal("a node beyond the last index registered")
	}
	again := &datanode{uuid: "7"}
	if err := bm.register(again); err != nil || again.index != 8 || bm.byIndex[8] != again {
		t.Fatalf("node 7 registering again: %v, index %d", err, again.index)
	}
}

// TestLocationsKeepOneOrderPerReader: a reader is sent to the same replica
// of a block each time (its datanode has it in its page cache), readers and
// blocks spread over the replicas, and the local replica and fresh nodes
// still come first.
func TestLocationsKeepOneOrderPerReader(t *testing.T) {
	src := testBlocks{}
	bm := newBlockMap(src)
	uuids := []string{"dn-a", "dn-b", "dn-c"}
	for i, u := range uuids {
		bm.register(&datanode{uuid: u, info: &pb.DatanodeInfoProto{Id: &pb.DatanodeIDProto{IpAddr: proto.String(fmt.Sprintf("10.0.0.%d", i+1))}}})
	}
	const blocks = 3000
	for i := range uint64(blocks) {
		id := namespace.FirstBlockID + i
		src[id] = namespace.Block{ID: id, GenStamp: 1}
		bm.add(42, src[id], uuids)
	}
	fresh := func(*datanode) bool { return false }
	order := func(id uint64, ip string, stale func(*datanode) bool) string {
		var s string
		for _, dn := range bm.locations(id, ip, stale) {
			s += dn.uuid + " "
		}
		return s
	}
	first := map[string]int{}
	differs := 0
	for i := range uint64(blocks) {
		id := namespace.FirstBlockID + i
		o := order(id, "10.0.1.1", fresh)
		if again := order(id, "10.0.1.1", fresh); again != o {
			t.Fatalf("block %d: order %q, then %q for the same reader", id, o, again)
		}
		first[o[:4]]++
		if order(id, "10.0.1.2", fresh) != o {
			differs++
		}
		if o := order(id, "10.0.0.2", fresh); o[:4] != "dn-b" {
			t.Fatalf("block %d: reader on dn-b's host sent to %q", id, o)
		}
		if o := order(id, "10.0.1.1", func(dn *datanode) bool { return dn.uuid != "dn-c" }); o[:4] != "dn-c" {
			t.Fatalf("block %d: the one fresh node is not first: %q", id, o)
		}
	}
	for _, u := range uuids {
		if n := first[u]; n < blocks/4 || n > blocks*5/12 {
			t.Fatalf("%s first for %d of %d blocks: %v", u, n, blocks, first)
		}
	}
	if differs < blocks/2 {
		t.Fatalf("another reader got another order for only %d of %d blocks", differs, blocks)
	}
}

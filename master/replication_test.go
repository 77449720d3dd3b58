package master

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol/pb"
)

// testMaster is a master in a temp dir with n fake datanodes, live and
// with room, registered in its block map.
func testMaster(t *testing.T, n int) (*Master, []*datanode) {
	cfg := DefaultConfig(t.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var dns []*datanode
	for i := 0; i < n; i++ {
		uuid := fmt.Sprintf("dn%d", i)
		dn := &datanode{uuid: uuid, lastHeartbeat: cfg.Now(),
			info: &pb.DatanodeInfoProto{Id: &pb.DatanodeIDProto{DatanodeUuid: proto.String(uuid), IpAddr: proto.String("127.0.0.1"),
				XferPort: proto.Uint32(uint32(i + 1))}, Remaining: proto.Uint64(1 << 40)}}
		m.mu.blocks.register(dn)
		dns = append(dns, dn)
	}
	return m, dns
}

// TestMonitorFollowsEvents checks the replication monitor: after its
// first full pass it looks only at blocks something happened to, copies
// every block a dead node held, a bounded number per pass, until all are
// fully replicated again, and then has nothing left to look at.
func TestMonitorFollowsEvents(t *testing.T) {
	m, dns := testMaster(t, 4)
	m.mu.Lock()
	defer m.mu.Unlock()
	const files = 500
	makeFiles(t, m, files, []string{"dn0", "dn1", "dn2"})
	m.replicateLocked() // the first pass looks at everything
	if m.mu.blocks.suspects.Len() != 0 || len(m.mu.blocks.pending) != 0 {
		t.Fatalf("healthy cluster: %d suspects, %d copies after the first pass", m.mu.blocks.suspects.Len(), len(m.mu.blocks.pending))
	}

	m.mu.blocks.nodeDead(dns[0])
	if got := m.mu.blocks.suspects.Len(); got != files {
		t.Fatalf("%d suspect blocks after a node holding %d died", got, files)
	}
	budget := m.cfg.MaxTransfersPerNode * 3
	for pass := 0; ; pass++ {
		if pass > 2*files/budget+5 {
			t.Fatalf("blocks still under-replicated after %d passes", pass)
		}
		m.replicateLocked()
		if n := len(m.mu.blocks.pending); n > budget {
			t.Fatalf("pass %d queued %d copies, more than the budget of %d", pass, n, budget)
		}
		if len(m.mu.blocks.pending) == 0 && m.mu.blocks.suspects.Len() == 0 {
			break
		}
		// The datanodes make the copies they were told to and report them.
		for _, dn := range dns[1:] {
			for _, cmd := range dn.transfers {
				for _, target := range cmd.Targets {
					m.mu.blocks.reported(m.mu.blocks.nodes[target.GetId().GetDatanodeUuid()], cmd.Block.GetBlockId(), cmd.Block.GetGenStamp(), cmd.Block.GetNumBytes())
				}
			}
			dn.transfers = nil
		}
	}
	if got := dns[3].blocks.Len(); got != files {
		t.Fatalf("the spare node holds %d replicas, want all %d blocks the dead node held", got, files)
	}
	m.scanBlocksLocked(func(h *blockHealth) {
		if h.counted != h.want {
			t.Fatalf("block %d has %d live replicas, wants %d", h.block.ID, h.counted, h.want)
		}
	})
}

// TestSafeModeCountsReportedBlocks checks the counts safe mode decides
// on, kept as replicas come and go, against a count from scratch.
func TestSafeModeCountsReportedBlocks(t *testing.T) {
	m, dns := testMaster(t, 3)
	m.mu.Lock()
	defer m.mu.Unlock()
	makeFiles(t, m, 200, []string{}) // no replicas known yet, as after a restart
	// A file being written, whose block has a replica: not counted.
	res, err := m.applyLocked(&namespace.Entry{Type: namespace.OpCreate, Path: "/writing", FileID: m.mu.tree.NextInodeID(),
		Client: "c", Replication: 3, BlockSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	blk := namespace.Block{ID: m.mu.tree.NextBlockID(), GenStamp: m.mu.tree.NextGenStamp()}
	if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAddBlock, FileID: res.Inode.ID(), Client: "c", Block: &blk}); err != nil {
		t.Fatal(err)
	}
	m.mu.blocks.add(res.Inode.ID(), blk, []string{"dn0"})
	check := func(when string) {
		t.Helper()
		want := 0
		for id, bi := range m.mu.blocks.blocks.All() {
			if len(m.mu.blocks.replicas(id)) > 0 && m.mu.tree.UnderConstruction(bi.fileID()) == nil {
				want++
			}
		}
		if r, total := m.reportedFractionLocked(); r != want || total != 200 {
			t.Fatalf("%s: %d of %d blocks reported, want %d of 200", when, r, total, want)
		}
	}
	check("before any report")
	ids := make([]uint64, 0, 200)
	for id := range m.mu.blocks.blocks.All() {
		if id != blk.ID {
			ids = append(ids, id)
		}
	}
	for i, id := range ids[:150] {
		b, _ := m.mu.blocks.block(id)
		m.mu.blocks.reported(dns[i%2], id, b.GenStamp, 1)
		m.mu.blocks.reported(dns[2], id, b.GenStamp, 1)
	}
	check("after reports")
	m.mu.blocks.nodeDead(dns[2])
	check("after a node died")
	m.mu.blocks.nodeDead(dns[0])
	check("after another died")
}

// TestBlockReportPartsInOrder checks that the parts of a full block report
// are taken only in order and from one report: a part out of place is
// refused and the report must start again, since the master drops the
// replicas the parts did not list after the last one.
func TestBlockReportPartsInOrder(t *testing.T) {
	m, _ := testMaster(t, 1)
	m.mu.Lock()
	makeFiles(t, m, 4, []string{"dn0"})
	m.mu.Unlock()
	ctx := context.Background()
	part := func(id uint64, n uint32, more bool) error {
		_, err := m.blockReport(ctx, underLease(t, m, &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn0"),
			ReportId: proto.Uint64(id), Part: proto.Uint32(n), More: proto.Bool(more)}))
		return err
	}
	if err := part(9, 1, true); err == nil {
		t.Fatal("a report's part 1 was taken before its part 0")
	}
	if err := part(9, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := part(8, 1, false); err == nil {
		t.Fatal("a part of another report was taken")
	}
	if err := part(9, 1, false); err == nil {
		t.Fatal("a report that had a part refused went on")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.mu.blocks.nodes["dn0"].blocks.Len(); got != 4 {
		t.Fatalf("the datanode holds %d replicas after refused parts, want all 4", got)
	}
}

// TestStartScanInStretches checks the monitor's scan of every block after
// a start: a bounded stretch per pass, every block looked at once it is
// over (each under-replicated one is being copied or waits as a suspect),
// and a change behind the scan's position is not lost.
func TestStartScanInStretches(t *testing.T) {
	m, _ := testMaster(t, 4)
	m.mu.Lock()
	defer m.mu.Unlock()
	defer func(d time.Duration) { scanPerPass = d }(scanPerPass)
	scanPerPass = time.Millisecond
	const files = 20000
	makeFiles(t, m, files, []string{"dn0", "dn1"}) // every block one replica short
	bm := m.mu.blocks
	if bm.suspects.Len() != 0 {
		t.Fatalf("%d suspects recorded ahead of the scan", bm.suspects.Len())
	}
	m.replicateLocked()
	if bm.rescanFrom == 0 {
		t.Fatal("the scan of every block ended in one pass")
	}
	first, _ := bm.blocks.Next(0)
	bm.removeReplica(first, "dn1") // behind the scan
	if bm.suspects.Ptr(first) == nil {
		t.Fatal("a change behind the scan was not recorded")
	}
	for pass := 1; bm.rescanFrom != 0; pass++ {
		if pass > 10000 {
			t.Fatalf("scan not over after %d passes", pass)
		}
		m.replicateLocked()
	}
	for id := range bm.blocks.All() {
		suspect := bm.suspects.Ptr(id) != nil
		if bm.pending[id] == nil && !suspect {
			t.Fatalf("block %d: under-replicated, neither being copied nor suspect after the scan", id)
		}
	}
}

// TestBlockReportInBatches checks a full report taken a few replicas per
// hold of the lock: every reported replica recorded, every unreported one
// forgotten, and a report whose datanode re-registers half-way dropped
// without touching the new registration.
func TestBlockReportInBatches(t *testing.T) {
	defer func(n int) { reportBatch = n }(reportBatch)
	reportBatch = 2
	m, _ := testMaster(t, 2)
	m.mu.Lock()
	makeFiles(t, m, 7, []string{"dn0", "dn1"})
	var blocks []namespace.Block
	m.mu.tree.Files(func(n *namespace.Inode) { blocks = append(blocks, n.Blocks()[0]) })
	m.mu.Unlock()
	slices.SortFunc(blocks, func(a, b namespace.Block) int { return cmp.Compare(a.ID, b.ID) })
	var ids []uint64
	for _, b := range blocks {
		ids = append(ids, b.ID)
	}
	report := func(ids []uint64) *pb.BlockReportRequestProto {
		req := &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn0")}
		for _, b := range blocks[:len(ids)] {
			req.Blocks = append(req.Blocks, blockProto(b.ID, b.GenStamp, b.Len))
		}
		return req
	}
	// As godfs datanodes send it: packed (id, stamp, length) triples. A
	// list that is not triples is refused before anything is taken.
	packed := &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn0")}
	for _, b := range blocks[:5] {
		packed.Replicas = append(packed.Replicas, b.ID, b.GenStamp, b.Len)
	}
	torn := &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn0"), Replicas: packed.Replicas[:14]}
	if _, err := m.blockReport(context.Background(), underLease(t, m, torn)); err == nil {
		t.Fatal("a report of 14 numbers was taken")
	}
	if _, err := m.blockReport(context.Background(), underLease(t, m, packed)); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	got := slices.Sorted(m.mu.blocks.nodes["dn0"].blocks.All())
	m.mu.Unlock()
	if !slices.Equal(got, ids[:5]) {
		t.Fatalf("dn0 holds %v after reporting %v", got, ids[:5])
	}

	// The datanode re-registers after the report's first batch.
	batches := 0
	testHookReportBatch = func() {
		if batches++; batches == 1 {
			m.registerDatanode(context.Background(), &pb.RegisterDatanodeRequestProto{Info: m.mu.blocks.nodes["dn0"].info})
		}
	}
	defer func() { testHookReportBatch = nil }()
	if _, err := m.blockReport(context.Background(), underLease(t, m, report(ids))); err == nil {
		t.Fatal("a report whose datanode re-registered half-way went on")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.mu.blocks.nodes["dn0"].blocks.Len(); n != 0 {
		t.Fatalf("the new registration of dn0 holds %d replicas from the old one's report", n)
	}
}

// TestIncrementalReportInBatches checks an incremental report taken a few
// entries per hold of the lock: replicas received recorded, deleted and
// corrupt ones forgotten, the rest of a report whose datanode
// re-registers half-way dropped without touching the new registration,
// and a dead datanode's report dropped.
func TestIncrementalReportInBatches(t *testing.T) {
	defer func(n int) { reportBatch = n }(reportBatch)
	reportBatch = 2
	m, _ := testMaster(t, 2)
	m.mu.Lock()
	makeFiles(t, m, 7, []string{"dn0"})
	var blocks []*pb.BlockProto
	m.mu.tree.Files(func(n *namespace.Inode) {
		b := n.Blocks()[0]
		blocks = append(blocks, blockProto(b.ID, b.GenStamp, b.Len))
	})
	m.mu.Unlock()
	slices.SortFunc(blocks, func(a, b *pb.BlockProto) int { return cmp.Compare(a.GetBlockId(), b.GetBlockId()) })
	ids := func(bs []*pb.BlockProto) (out []uint64) {
		for _, b := range bs {
			out = append(out, b.GetBlockId())
		}
		return out
	}
	holds := func(uuid string) []uint64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return slices.Sorted(m.mu.blocks.nodes[uuid].blocks.All())
	}
	ibr := func(req *pb.BlockReceivedAndDeletedRequestProto) {
		t.Helper()
		if _, err := m.blockReceivedAndDeleted(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}

	// 5 entries: 3 batches.
	ibr(&pb.BlockReceivedAndDeletedRequestProto{DatanodeUuid: proto.String("dn0"),
		Deleted: blocks[:3], Corrupt: blocks[3:5]})
	if got, want := holds("dn0"), ids(blocks[5:]); !slices.Equal(got, want) {
		t.Fatalf("dn0 holds %v after deleting 3 and finding 2 corrupt, want %v", got, want)
	}
	ibr(&pb.BlockReceivedAndDeletedRequestProto{DatanodeUuid: proto.String("dn1"), Received: blocks[:5]})
	if got, want := holds("dn1"), ids(blocks[:5]); !slices.Equal(got, want) {
		t.Fatalf("dn1 holds %v after receiving %v", got, want)
	}

	// dn1 re-registers after the first batch of a report of 3 more.
	batches := 0
	testHookReportBatch = func() {
		if batches++; batches == 1 {
			m.registerDatanode(context.Background(), &pb.RegisterDatanodeRequestProto{Info: m.mu.blocks.nodes["dn1"].info})
		}
	}
	defer func() { testHookReportBatch = nil }()
	ibr(&pb.BlockReceivedAndDeletedRequestProto{DatanodeUuid: proto.String("dn1"), Received: blocks[4:7]})
	if batches != 1 {
		t.Fatalf("a report of 3 entries went in %d batches after its first, want 1", batches)
	}
	if got := holds("dn1"); len(got) != 0 {
		t.Fatalf("the new registration of dn1 holds %v from before it", got)
	}

	// A dead datanode's report is not taken: it must register again.
	testHookReportBatch = nil
	m.mu.Lock()
	m.mu.blocks.nodeDead(m.mu.blocks.nodes["dn1"])
	m.mu.Unlock()
	ibr(&pb.BlockReceivedAndDeletedRequestProto{DatanodeUuid: proto.String("dn1"), Received: blocks[6:]})
	if got := holds("dn1"); len(got) != 0 {
		t.Fatalf("dead dn1 holds %v after an incremental report", got)
	}
}

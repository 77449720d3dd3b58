package master

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

// underLease has req's datanode ask for a full-report lease in a
// heartbeat, as datanodes do, and puts it on req.
func underLease(t testing.TB, m *Master, req *pb.BlockReportRequestProto) *pb.BlockReportRequestProto {
	t.Helper()
	lease := askLease(t, m, req.GetDatanodeUuid())
	if lease == 0 {
		t.Fatalf("datanode %s got no report lease", req.GetDatanodeUuid())
	}
	req.Lease = proto.Uint64(lease)
	return req
}

// askLease sends a heartbeat of datanode uuid asking for a report lease
// and returns the lease granted (0 for none).
func askLease(t testing.TB, m *Master, uuid string) uint64 {
	t.Helper()
	resp, err := m.sendHeartbeat(context.Background(), &pb.HeartbeatRequestProto{DatanodeUuid: proto.String(uuid),
		WantReportLease: proto.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetReportLease()
}

// TestReportLeases checks that full block reports are admitted a few at a
// time: a datanode gets a lease only while fewer than the maximum are out,
// a report without the lease its node holds is refused, and a lease comes
// back when its report ends, its node re-registers or it is not used for
// ReportLeaseTimeout.
func TestReportLeases(t *testing.T) {
	m, _ := testMaster(t, 3)
	now := m.cfg.Now()
	m.cfg.Now = func() time.Time { return now }
	m.mu.reportLeases = newReportLeases(2, time.Minute)
	m.mu.Lock()
	makeFiles(t, m, 3, []string{"dn0", "dn1", "dn2"})
	m.mu.Unlock()
	report := func(uuid string, lease uint64, more bool) error {
		_, err := m.blockReport(context.Background(), &pb.BlockReportRequestProto{DatanodeUuid: proto.String(uuid),
			ReportId: proto.Uint64(7), More: proto.Bool(more), Lease: proto.Uint64(lease)})
		return err
	}

	l0, l1 := askLease(t, m, "dn0"), askLease(t, m, "dn1")
	if l0 == 0 || l1 == 0 || l0 == l1 {
		t.Fatalf("leases %d and %d for the first two datanodes, want two different ones", l0, l1)
	}
	if again := askLease(t, m, "dn0"); again != l0 {
		t.Fatalf("dn0 asked again and got lease %d, not its %d", again, l0)
	}
	if l2 := askLease(t, m, "dn2"); l2 != 0 {
		t.Fatalf("a third lease (%d) with at most 2 out", l2)
	}
	for _, lease := range []uint64{0, l0} { // none, and another node's
		if err := report("dn2", lease, false); !errors.Is(err, protocol.ErrInvalidArgument) {
			t.Fatalf("dn2's report under lease %d: %v, want it refused", lease, err)
		}
	}

	// A report in parts keeps its lease until its last part.
	if err := report("dn0", l0, true); err != nil {
		t.Fatal(err)
	}
	if l2 := askLease(t, m, "dn2"); l2 != 0 {
		t.Fatal("dn2 got a lease while dn0's report was half-way")
	}
	if _, err := m.blockReport(context.Background(), &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn0"),
		ReportId: proto.Uint64(7), Part: proto.Uint32(1), Lease: proto.Uint64(l0)}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(40 * time.Second)
	l2 := askLease(t, m, "dn2") // lasts 40 s longer than dn1's
	if l2 == 0 {
		t.Fatal("no lease for dn2 after dn0's report ended")
	}
	if err := report("dn0", l0, false); err == nil {
		t.Fatal("a second report under a lease whose report ended was taken")
	}

	// dn1 never reports: its lease lapses after the timeout.
	if askLease(t, m, "dn0") != 0 {
		t.Fatal("a third lease while dn1's and dn2's are out")
	}
	now = now.Add(30 * time.Second) // 70 s after dn1's lease, 30 after dn2's
	if err := report("dn1", l1, false); err == nil {
		t.Fatal("a report under a lapsed lease was taken")
	}
	if askLease(t, m, "dn0") == 0 {
		t.Fatal("no lease for dn0 once dn1's lapsed")
	}
	if askLease(t, m, "dn1") != 0 {
		t.Fatal("a third lease while dn0's and dn2's are out")
	}

	// A node that registers again gives its lease back.
	m.registerDatanode(context.Background(), &pb.RegisterDatanodeRequestProto{Info: m.mu.blocks.nodes["dn2"].info})
	if err := report("dn2", l2, false); err == nil {
		t.Fatal("a report under the lease of a previous registration was taken")
	}
	if askLease(t, m, "dn1") == 0 {
		t.Fatal("no lease for dn1 once dn2 re-registered")
	}

	// A datanode older than report leases sends none at all (the field
	// absent, not 0): its report is taken, as HDFS takes lease 0, while
	// the leases of the others stay as they were.
	if _, err := m.blockReport(context.Background(), &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn2"),
		ReportId: proto.Uint64(8)}); err != nil {
		t.Fatalf("a report without the lease field: %v", err)
	}
	if askLease(t, m, "dn2") != 0 {
		t.Fatal("a third lease while dn0's and dn1's are out")
	}
}

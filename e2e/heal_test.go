package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/godfstest"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
)

// waitFor polls cond every 200ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

// healthy reports whether `godfs fsck /` says so (exit 0).
func healthy(cl *godfstest.Cluster) bool {
	return cl.Run(nil, "fsck", "/").Code == 0
}

// replicaCount is the number of finalized replicas on the datanodes.
func replicaCount(t *testing.T, cl *godfstest.Cluster, nodes ...int) int {
	n := 0
	for _, i := range nodes {
		n += len(godfstest.Replicas(t, cl.DataNodes[i].Dir))
	}
	return n
}

func TestReReplicationAfterDatanodeLoss(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4})
	c := cl.Client()
	data := randomBytes(t, 5*blockSize+321)
	put(t, c, "/f", data)
	if !healthy(cl) {
		t.Fatalf("fsck after the write: %+v", cl.Run(nil, "fsck", "/"))
	}
	cl.KillDataNode(0)
	took := waitFor(t, 60*time.Second, "full replication after losing a datanode", func() bool { return healthy(cl) })
	t.Logf("kill -9 to full replication (5 MiB, dead-after 4s): %v", took.Round(100*time.Millisecond))
	// Lose a second original node: every block still has a replica.
	cl.KillDataNode(1)
	if got := get(t, c, "/f"); !bytes.Equal(got, data) {
		t.Fatal("read with two original datanodes gone: bytes differ")
	}
	// fsck reports the loss while it lasts, and exits non-zero.
	if r := cl.Run(nil, "fsck", "/"); r.Code != 0 && !strings.Contains(r.Stdout, "UNDER_REPLICATED") {
		t.Fatalf("fsck with a dead node: %+v", r)
	}
}

func TestFsckReportsMissingBlocks(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 1, Replication: 1})
	put(t, cl.Client(), "/only", randomBytes(t, 1000))
	cl.KillDataNode(0)
	waitFor(t, 20*time.Second, "fsck to see the block missing", func() bool {
		r := cl.Run(nil, "fsck", "/")
		return r.Code == 1 && strings.Contains(r.Stdout, "MISSING") && strings.Contains(r.Stdout, "CORRUPT (data lost)")
	})
}

func TestScannerReplacesCorruptReplica(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{ScanPeriod: time.Second})
	data := randomBytes(t, blockSize+7)
	put(t, cl.Client(), "/f", data)
	files := godfstest.BlockFiles(t, cl.DataNodes[1].Dir)
	if len(files) != 1 { // the 7 bytes are in a pack
		t.Fatalf("datanode holds %d block files, want 1", len(files))
	}
	var victim string
	for _, f := range files {
		if len(godfstest.BlockData(t, f)) == blockSize {
			victim = f
		}
	}
	b, _ := os.ReadFile(victim)
	good := append([]byte(nil), b...)
	b[12345] ^= 0x01
	os.WriteFile(victim, b, 0o644)
	// No reads: the scanner alone finds it, the master has it copied again.
	waitFor(t, 30*time.Second, "corrupt replica replaced", func() bool {
		now, _ := os.ReadFile(victim)
		return bytes.Equal(now, good)
	})
	q, _ := filepath.Glob(filepath.Join(cl.DataNodes[1].Dir, "current", "corrupt", "blk_*"))
	if len(q) == 0 {
		t.Fatal("the corrupt replica was not quarantined")
	}
	if !healthy(cl) {
		t.Fatal("fsck not healthy after the repair")
	}
}

func TestSetReplication(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4})
	data := randomBytes(t, 2*blockSize+5) // 3 blocks
	put(t, cl.Client(), "/d/f", data, client.CreateParents())
	all := []int{0, 1, 2, 3}
	if n := replicaCount(t, cl, all...); n != 9 {
		t.Fatalf("%d replicas after the write, want 9", n)
	}
	if r := cl.Run(nil, "setrep", "-R", "1", "/d"); r.Code != 0 {
		t.Fatalf("setrep: %+v", r)
	}
	waitFor(t, 30*time.Second, "extra replicas deleted", func() bool { return replicaCount(t, cl, all...) == 3 })
	if r := cl.Run(nil, "setrep", "4", "/d/f"); r.Code != 0 {
		t.Fatalf("setrep: %+v", r)
	}
	waitFor(t, 30*time.Second, "replicas copied", func() bool { return replicaCount(t, cl, all...) == 12 })
	if got := get(t, cl.Client(), "/d/f"); !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	if r := cl.Run(nil, "setrep", "2", "/d"); r.Code != 1 || !strings.Contains(r.Stderr, "use -R") {
		t.Fatalf("setrep on a directory without -R: %+v", r)
	}
}

func TestDecommission(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4})
	c := cl.Client()
	data := randomBytes(t, 4*blockSize)
	put(t, c, "/f", data)
	// Placement may leave a node out of all 4 blocks: decommission one
	// that holds some.
	victim := slices.IndexFunc([]int{0, 1, 2, 3}, func(i int) bool { return replicaCount(t, cl, i) > 0 })
	if victim < 0 {
		t.Fatal("no datanode holds a replica after the write")
	}
	node := cl.DataNodes[victim].Addr
	r := cl.Run(nil, "decommission", "--wait", node)
	if r.Code != 0 || !strings.Contains(r.Stdout, "decommissioned") {
		t.Fatalf("decommission: %+v", r)
	}
	// Nothing is left only there: remove it and everything is still whole.
	cl.KillDataNode(victim)
	if got := get(t, c, "/f"); !bytes.Equal(got, data) {
		t.Fatal("read after removing the decommissioned node: bytes differ")
	}
	if r := cl.Run(nil, "report"); !strings.Contains(r.Stdout, "decommissioned") {
		t.Fatalf("report: %+v", r)
	}
	if r := cl.Run(nil, "decommission", "127.0.0.1:1"); r.Code != 1 || !strings.Contains(r.Stderr, "no such datanode") {
		t.Fatalf("decommission of an unknown node: %+v", r)
	}
}

func TestReturningNodeStaleReplicasRemoved(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4})
	c := cl.Client()
	keep := randomBytes(t, 2*blockSize)
	put(t, c, "/keep", keep)
	put(t, c, "/gone", randomBytes(t, blockSize))
	all := []int{0, 1, 2, 3}
	cl.KillDataNode(0)
	waitFor(t, 60*time.Second, "re-replication", func() bool { return healthy(cl) })
	if r := cl.Run(nil, "rm", "/gone"); r.Code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	cl.RestartDataNode(0)
	// Its replicas of /keep are now extra and those of /gone are garbage:
	// both go, leaving exactly 3 replicas of each of /keep's 2 blocks.
	waitFor(t, 60*time.Second, "stale replicas removed", func() bool { return replicaCount(t, cl, all...) == 6 })
	if got := get(t, c, "/keep"); !bytes.Equal(got, keep) {
		t.Fatal("bytes differ")
	}
}

func TestSafeModeAfterRestart(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 1, Replication: 1})
	put(t, cl.Client(), "/f", []byte("data"))
	cl.KillDataNode(0)
	cl.KillMaster()
	cl.RestartMaster()
	r := cl.Run(nil, "report")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Safe mode: on") {
		t.Fatalf("report after restart without datanodes: %+v", r)
	}
	for _, args := range [][]string{{"mkdir", "/g"}, {"rm", "/f"}, {"mv", "/f", "/h"}} {
		if r := cl.Run(nil, args...); r.Code != 1 || !strings.Contains(r.Stderr, "safe mode") {
			t.Fatalf("%v in safe mode: %+v", args, r)
		}
	}
	if r := cl.Run(nil, "ls", "/"); r.Code != 0 || !strings.Contains(r.Stdout, "f") {
		t.Fatalf("listing in safe mode: %+v", r)
	}
	cl.RestartDataNode(0)
	waitFor(t, 20*time.Second, "safe mode off once the block reported", func() bool {
		return strings.Contains(cl.Run(nil, "report").Stdout, "Safe mode: off")
	})
	if r := cl.Run(bytes.NewReader([]byte("x")), "put", "-", "/g"); r.Code != 0 {
		t.Fatalf("write after safe mode: %+v", r)
	}
	// An operator can hold it.
	if r := cl.Run(nil, "safemode", "enter"); r.Code != 0 || !strings.Contains(r.Stdout, "ON") {
		t.Fatalf("safemode enter: %+v", r)
	}
	if r := cl.Run(nil, "mkdir", "/x"); r.Code != 1 {
		t.Fatalf("mkdir in manual safe mode: %+v", r)
	}
	if r := cl.Run(nil, "safemode", "leave"); r.Code != 0 || !strings.Contains(r.Stdout, "OFF") {
		t.Fatalf("safemode leave: %+v", r)
	}
}

func TestBalancer(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 1, Replication: 1})
	c := cl.Client()
	want := map[string][]byte{}
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("/f%d", i)
		want[name] = randomBytes(t, blockSize)
		put(t, c, name, want[name])
	}
	cl.AddDataNode()
	cl.AddDataNode()
	cl.WaitLive(3)
	time.Sleep(1500 * time.Millisecond) // a heartbeat with the new nodes' usage
	r := cl.Run(nil, "balance", "--threshold", "0.2")
	if r.Code != 0 || !strings.Contains(r.Stdout, "balanced") {
		t.Fatalf("balance: %+v", r)
	}
	// The moved-away replicas are deleted at the sources' next heartbeat.
	waitFor(t, 20*time.Second, "every datanode holding 3 to 5 of the 12 blocks", func() bool {
		for i := range cl.DataNodes {
			if n := replicaCount(t, cl, i); n < 3 || n > 5 {
				return false
			}
		}
		return replicaCount(t, cl, 0, 1, 2) == 12
	})
	for name, data := range want {
		if got := get(t, c, name); !bytes.Equal(got, data) {
			t.Fatalf("%s differs after balancing", name)
		}
	}
	if !healthy(cl) {
		t.Fatal("fsck not healthy after balancing")
	}
}

// TestSafeModeIgnoresBlocksBeingWritten: a block allocated to a file being
// written that never reached a datanode before the master was killed must
// not keep the restarted master in safe mode.
func TestSafeModeIgnoresBlocksBeingWritten(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	put(t, cl.Client(), "/done", randomBytes(t, 1000))
	// A writer that got a block from the master and died before sending
	// any data to the datanodes.
	rpc := hrpc.NewClient(cl.Master.Addr, hrpc.ClientOptions{Protocol: protocol.ClientProtocol})
	defer rpc.Close()
	ctx := ctxT(t)
	cr := &pb.CreateResponseProto{}
	if err := rpc.Call(ctx, "create", &pb.CreateRequestProto{Src: proto.String("/open"), Masked: &pb.FsPermissionProto{Perm: proto.Uint32(0o644)},
		ClientName: proto.String("dying"), CreateFlag: proto.Uint32(1), CreateParent: proto.Bool(false),
		Replication: proto.Uint32(3), BlockSize: proto.Uint64(blockSize)}, cr); err != nil {
		t.Fatal(err)
	}
	if err := rpc.Call(ctx, "addBlock", &pb.AddBlockRequestProto{Src: proto.String("/open"), ClientName: proto.String("dying"),
		FileId: proto.Uint64(cr.GetFs().GetFileId())}, &pb.AddBlockResponseProto{}); err != nil {
		t.Fatal(err)
	}
	cl.KillMaster()
	cl.RestartMaster()
	cl.WaitLive(3)
	waitFor(t, 20*time.Second, "safe mode to end", func() bool {
		return strings.Contains(cl.Run(nil, "report").Stdout, "Safe mode: off")
	})
}

// TestBlockReportsInPartsAfterMasterRestart kills the master of a cluster
// whose datanodes report their replicas two per call, one datanode at a
// time (a single report lease): after its restart the master must learn
// every replica from the parts (fsck healthy again) and delete none of
// them.
func TestBlockReportsInPartsAfterMasterRestart(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{BlockReportPart: 2, MaxReportLeases: 1})
	c := cl.Client()
	for i := range 5 {
		put(t, c, fmt.Sprintf("/f%d", i), randomBytes(t, blockSize+1000*i)) // two blocks each
	}
	if !healthy(cl) {
		t.Fatalf("fsck after the writes: %+v", cl.Run(nil, "fsck", "/"))
	}
	before := replicaCount(t, cl, 0, 1, 2) // 30: five parts per datanode
	cl.KillMaster()
	cl.RestartMaster()
	waitFor(t, 30*time.Second, "fsck healthy after the master's restart", func() bool { return healthy(cl) })
	time.Sleep(3 * time.Second) // heartbeats that would carry deletions
	if after := replicaCount(t, cl, 0, 1, 2); after != before {
		t.Fatalf("%d replicas on the datanodes after the restart, %d before", after, before)
	}
}

// A datanode volume that dies (here its directory vanishes, as a disk that
// drops out does) is taken out of service at the datanode's next
// heartbeat: its replicas are reported gone and copied again from the
// others, and no new replica goes to it.
func TestVolumeLossIsHealed(t *testing.T) {
	// Reports of 4 replicas a call: the lost ones go in several.
	cl := godfstest.NewCluster(t, godfstest.Config{Volumes: 2, Replication: 2, BlockReportPart: 4})
	c := cl.Client()
	files := map[string][]byte{"/big": randomBytes(t, 6*blockSize+77)}
	for i := range 20 {
		files[fmt.Sprintf("/small%d", i)] = randomBytes(t, 3000+i) // packed replicas
	}
	for name, data := range files {
		put(t, c, name, data)
	}
	replicas := func() (n int) {
		for _, dn := range cl.DataNodes {
			for _, v := range []string{"v1", "v2"} {
				if dir := filepath.Join(dn.Dir, v); dirExists(dir) {
					n += len(godfstest.Replicas(t, dir))
				}
			}
		}
		return n
	}
	want := 2 * (7 + 20)
	if got := replicas(); got != want {
		t.Fatalf("%d replicas after the writes, want %d", got, want)
	}
	dead := filepath.Join(cl.DataNodes[0].Dir, "v2")
	lost := len(godfstest.Replicas(t, dead))
	if lost == 0 {
		t.Fatal("no replica on the volume to lose")
	}
	if err := os.RemoveAll(dead); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the datanode to find its volume gone", func() bool {
		return strings.Contains(cl.DataNodes[0].Log(), "volume failed")
	})
	took := waitFor(t, 60*time.Second, fmt.Sprintf("the %d lost replicas copied again", lost), func() bool {
		return healthy(cl) && replicas() == want
	})
	t.Logf("%d replicas lost with a volume, all copied again %v after it was found gone", lost, took.Round(100*time.Millisecond))
	put(t, c, "/after", randomBytes(t, 2*blockSize))
	if dirExists(dead) {
		t.Fatal("the datanode made the dead volume's directory again")
	}
	for name, data := range files {
		if got := get(t, c, name); !bytes.Equal(got, data) {
			t.Fatalf("%s reads back wrong", name)
		}
	}
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// A datanode whose only volume dies stops, with one line saying why, and
// the master copies its replicas from the others once it is dead.
func TestDatanodeStopsWhenEveryVolumeFails(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4})
	c := cl.Client()
	data := randomBytes(t, 3*blockSize+5)
	put(t, c, "/f", data)
	dn := cl.DataNodes[0]
	if err := os.RemoveAll(filepath.Join(dn.Dir, "current")); err != nil {
		t.Fatal(err)
	}
	code, exited := dn.Wait(20 * time.Second)
	if !exited || code != 1 {
		t.Fatalf("datanode with no working volume: exited %v, code %d; want it to stop with 1", exited, code)
	}
	var last string
	for _, line := range strings.Split(strings.TrimSpace(dn.Log()), "\n") {
		if strings.HasPrefix(line, "godfs: ") {
			last = line
		}
	}
	if !strings.Contains(last, "every data directory has failed") {
		t.Fatalf("its last words %q do not say why:\n%s", last, dn.Log())
	}
	waitFor(t, 60*time.Second, "three replicas of each of /f's 4 blocks on the other datanodes", func() bool {
		return healthy(cl) && replicaCount(t, cl, 1, 2, 3) == 3*4
	})
	if got := get(t, c, "/f"); !bytes.Equal(got, data) {
		t.Fatal("/f reads back wrong")
	}
}

package master

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/placement"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// blockInfo is the soft state the master keeps per block: which file it
// belongs to and which datanodes hold it. Never persisted; rebuilt from
// block reports.
type blockInfo struct {
	fileID   uint64
	genStamp uint64
	numBytes uint64      // as the datanodes report it
	replicas []*datanode // none dead: a node's death drops it from every list
	// lens holds the lengths datanodes reported for the last block of a
	// file under construction, for lease recovery; nil otherwise.
	lens map[string]uint64
}

// adminState is a datanode's decommissioning state.
type adminState uint8

const (
	inService adminState = iota
	decommissioning
	decommissioned
)

func (a adminState) proto() pb.DatanodeInfoProto_AdminState {
	switch a {
	case decommissioning:
		return pb.DatanodeInfoProto_DECOMMISSION_INPROGRESS
	case decommissioned:
		return pb.DatanodeInfoProto_DECOMMISSIONED
	}
	return pb.DatanodeInfoProto_NORMAL
}

// datanode is one registered datanode.
type datanode struct {
	uuid          string
	info          *pb.DatanodeInfoProto // id, address, rack, last reported usage; immutable once set (responses share it)
	lastHeartbeat time.Time
	dead          bool
	admin         adminState
	blocks        map[uint64]struct{}             // replicas it holds (reverse of blockInfo.replicas)
	invalidate    []*pb.BlockProto                // replicas it must delete, sent with heartbeat replies
	transfers     []*pb.BlockTransferCommandProto // copies it must make, sent with heartbeat replies
	recover       []*pb.BlockRecoveryCommandProto // replicas to cut at lease recovery, sent with heartbeat replies
	sending       int                             // copies in flight with this node as the source
}

// inService reports whether the node counts for replication and may get
// new replicas (given it is also fresh).
func (dn *datanode) inService() bool { return !dn.dead && dn.admin == inService }

// pendingCopy is a copy of a block the master asked a datanode to make and
// whose arrival it has not heard of yet.
type pendingCopy struct {
	source   string
	targets  map[string]bool // uuids not yet reported
	deadline time.Time
	moveFrom string // for balancer moves: the replica to delete once done
}

// blockMap is the master's block -> replicas map, its datanode table and
// the copies in flight. It is not safe for concurrent use; the master's
// lock guards it.
type blockMap struct {
	blocks  map[uint64]*blockInfo
	nodes   map[string]*datanode
	pending map[uint64]*pendingCopy
	// suspects are the blocks whose replication may be off: every change
	// of a block's replicas, of its file's wanted replication or of a
	// holder's state puts it here, and the replication monitor looks at
	// these only, not at every block every pass.
	suspects map[uint64]struct{}
	// rescanAll says the monitor's next pass looks at every block (at
	// start, when block reports rebuild the map); suspects are not
	// recorded meanwhile.
	rescanAll bool
	// withReplicas counts the blocks with at least one replica, for safe
	// mode, which would otherwise count them all every second.
	withReplicas int
}

func newBlockMap() *blockMap {
	return &blockMap{blocks: map[uint64]*blockInfo{}, nodes: map[string]*datanode{}, pending: map[uint64]*pendingCopy{},
		suspects: map[uint64]struct{}{}, rescanAll: true}
}

// recheck has the replication monitor look at block id again.
func (bm *blockMap) recheck(id uint64) {
	if !bm.rescanAll {
		bm.suspects[id] = struct{}{}
	}
}

// add records a new block of a file, with the pipeline targets as its
// expected replicas until the datanodes report.
func (bm *blockMap) add(fileID uint64, b namespace.Block, targets []string) {
	bi := &blockInfo{fileID: fileID, genStamp: b.GenStamp}
	if old := bm.blocks[b.ID]; old != nil && len(old.replicas) > 0 {
		bm.withReplicas--
	}
	bm.blocks[b.ID] = bi
	for _, t := range targets {
		bm.addReplica(b.ID, bi, t)
	}
}

func (bm *blockMap) addReplica(id uint64, bi *blockInfo, uuid string) {
	dn := bm.nodes[uuid]
	if dn == nil {
		return
	}
	for _, r := range bi.replicas {
		if r == dn {
			return
		}
	}
	if len(bi.replicas) == 0 {
		bm.withReplicas++
	}
	bi.replicas = append(bi.replicas, dn)
	dn.blocks[id] = struct{}{}
	bm.recheck(id)
}

func (bm *blockMap) removeReplica(id uint64, uuid string) {
	if bi := bm.blocks[id]; bi != nil {
		for i, r := range bi.replicas {
			if r.uuid == uuid {
				bi.replicas = append(bi.replicas[:i], bi.replicas[i+1:]...)
				if len(bi.replicas) == 0 {
					bm.withReplicas--
				}
				break
			}
		}
	}
	if dn := bm.nodes[uuid]; dn != nil {
		delete(dn.blocks, id)
	}
	bm.recheck(id)
	// A copy from a replica that is gone will not come.
	if p := bm.pending[id]; p != nil && p.source == uuid {
		bm.finishPending(id)
	}
}

// invalidateReplica drops a replica from the map and has its datanode
// delete it.
func (bm *blockMap) invalidateReplica(id uint64, uuid string) {
	gs := uint64(0)
	if bi := bm.blocks[id]; bi != nil {
		gs = bi.genStamp
	}
	bm.removeReplica(id, uuid)
	if dn := bm.nodes[uuid]; dn != nil && !dn.dead {
		dn.invalidate = append(dn.invalidate, blockProto(id, gs, 0))
	}
}

// free forgets blocks no file refers to and queues their replicas for
// deletion on the datanodes that hold them.
func (bm *blockMap) free(blocks []namespace.Block) {
	for _, b := range blocks {
		bi := bm.blocks[b.ID]
		if bi == nil {
			continue
		}
		for _, dn := range append([]*datanode(nil), bi.replicas...) {
			bm.invalidateReplica(b.ID, dn.uuid)
		}
		bm.finishPending(b.ID)
		delete(bm.blocks, b.ID)
		delete(bm.suspects, b.ID)
	}
}

// reported handles a datanode's report that it holds a finalized replica.
// Replicas of unknown blocks or with a stale generation stamp are queued
// for deletion.
func (bm *blockMap) reported(dn *datanode, b *pb.BlockProto) {
	bi := bm.blocks[b.GetBlockId()]
	if bi == nil || b.GetGenStamp() < bi.genStamp {
		dn.invalidate = append(dn.invalidate, b)
		return
	}
	if b.GetGenStamp() > bi.genStamp {
		bi.genStamp = b.GetGenStamp()
	}
	bi.numBytes = b.GetNumBytes()
	bm.addReplica(b.GetBlockId(), bi, dn.uuid)
	if p := bm.pending[b.GetBlockId()]; p != nil && p.targets[dn.uuid] {
		delete(p.targets, dn.uuid)
		if len(p.targets) == 0 {
			if p.moveFrom != "" {
				bm.invalidateReplica(b.GetBlockId(), p.moveFrom)
			}
			bm.finishPending(b.GetBlockId())
		}
	}
}

// finishPending forgets a copy in flight.
func (bm *blockMap) finishPending(id uint64) {
	p := bm.pending[id]
	if p == nil {
		return
	}
	if src := bm.nodes[p.source]; src != nil && src.sending > 0 {
		src.sending--
	}
	delete(bm.pending, id)
	bm.recheck(id)
}

// recheckNode has the monitor look again at every block dn holds (its
// replicas stopped or started counting).
func (bm *blockMap) recheckNode(dn *datanode) {
	for id := range dn.blocks {
		bm.recheck(id)
	}
}

// nodeDead drops every replica of a dead datanode from the map.
func (bm *blockMap) nodeDead(dn *datanode) {
	for id := range dn.blocks {
		bm.removeReplica(id, dn.uuid)
	}
	dn.dead = true
	dn.invalidate = nil
	dn.transfers = nil
	dn.recover = nil
}

// live returns the live datanodes.
func (bm *blockMap) live() []*datanode {
	var out []*datanode
	for _, dn := range bm.nodes {
		if !dn.dead {
			out = append(out, dn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].uuid < out[j].uuid })
	return out
}

// holders returns the live datanodes holding a replica of id.
func (bm *blockMap) holders(id uint64) []*datanode {
	bi := bm.blocks[id]
	if bi == nil {
		return nil
	}
	out := make([]*datanode, 0, len(bi.replicas))
	for _, dn := range bi.replicas {
		if !dn.dead {
			out = append(out, dn)
		}
	}
	return out
}

// locations returns the live replicas of a block for a reader: the one on
// the client's host first, fresh nodes before stale ones, the rest
// shuffled so reads spread over replicas.
func (bm *blockMap) locations(id uint64, clientIP string, stale func(*datanode) bool, rng *rand.Rand) []*datanode {
	out := bm.holders(id)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	sort.SliceStable(out, func(i, j int) bool {
		li, lj := out[i].info.GetId().GetIpAddr() == clientIP, out[j].info.GetId().GetIpAddr() == clientIP
		if li != lj {
			return li
		}
		return !stale(out[i]) && stale(out[j])
	})
	return out
}

// placementNode describes dn to the placement policy.
func placementNode(dn *datanode, usable bool) placement.Node {
	return placement.Node{ID: dn.uuid, Addr: xferAddr(dn.info.GetId()), Host: dn.info.GetId().GetIpAddr(),
		Rack: dn.info.GetLocation(), Remaining: int64(dn.info.GetRemaining()), Usable: usable}
}

func xferAddr(id *pb.DatanodeIDProto) string { return xfer.Addr(id) }

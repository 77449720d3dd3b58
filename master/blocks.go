package master

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"time"

	"github.com/godfs/godfs/master/idtable"
	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/placement"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// blockInfo is the soft state the master keeps per block: which file it
// belongs to and which datanodes hold it. Never persisted; rebuilt from
// block reports. The block's stamp and length are the namespace's (see
// blockSource), not copied here.
//
// It holds no pointers and lives inline in the block map's pages, so
// millions of blocks cost 24 bytes each and nothing for the garbage
// collector to scan: the file id is kept in 48 bits (namespace.MaxInodeID)
// and a replica in 6 bytes.
type blockInfo struct {
	file [3]uint16 // the file's id, low 16 bits first
	// reps are the first replicas, packed from the front; more, rarely
	// (replication above 3, a balancer move), are in blockMap.extra. None
	// is on a dead node: a node's death drops it from every block.
	reps [inlineReplicas]replicaRef
}

const inlineReplicas = 3

func newBlockInfo(fileID uint64) blockInfo {
	return blockInfo{file: [3]uint16{uint16(fileID), uint16(fileID >> 16), uint16(fileID >> 32)}}
}

// blockSource is where the block map finds a block's generation stamp and
// length: the namespace, which keeps them durably. (The map kept copies
// once, 16 of the 40 bytes of its entry.)
type blockSource interface {
	// Block is block id of the file with id fileID, if the file has it.
	Block(fileID, id uint64) (namespace.Block, bool)
}

// fileID is the id of the file the block belongs to.
func (bi *blockInfo) fileID() uint64 {
	return uint64(bi.file[0]) | uint64(bi.file[1])<<16 | uint64(bi.file[2])<<32
}

// nodeIndex is a datanode's place in blockMap.byIndex, 0 for none. 16 bits
// keep a replica at 6 bytes; the master refuses a datanode registering
// when all 65,535 are taken (dead nodes keep theirs until it restarts).
type nodeIndex uint16

const maxNodes = 1<<16 - 1

// replicaRef is one replica of a block: its datanode and where the block
// is in that datanode's list, so that dropping a replica is O(1) both
// ways. The position is kept in two halves so the whole is 6 bytes with no
// padding.
type replicaRef struct {
	node         nodeIndex
	posLo, posHi uint16
}

func newReplicaRef(node nodeIndex, pos uint32) replicaRef {
	return replicaRef{node: node, posLo: uint16(pos), posHi: uint16(pos >> 16)}
}

func (r replicaRef) pos() uint32 { return uint32(r.posLo) | uint32(r.posHi)<<16 }

func (r *replicaRef) setPos(pos uint32) { r.posLo, r.posHi = uint16(pos), uint16(pos>>16) }

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
	storageID     string                // "DS-" and uuid: its one storage, as located blocks name it
	info          *pb.DatanodeInfoProto // id, address, rack, last reported usage; immutable once set (responses share it)
	lastHeartbeat time.Time
	dead          bool
	admin         adminState
	index         nodeIndex                       // in blockMap.byIndex, kept across re-registration
	blocks        blockList                       // the blocks it holds
	bytes         int64                           // the sum of their lengths, for the balancer
	invalidate    []*pb.BlockProto                // replicas it must delete, sent with heartbeat replies
	transfers     []*pb.BlockTransferCommandProto // copies it must make, sent with heartbeat replies
	recover       []*pb.BlockRecoveryCommandProto // replicas to cut at lease recovery, sent with heartbeat replies
	sending       int                             // copies in flight with this node as the source
	// scheduled is the room (a block size each) of the replicas placed on
	// it and not received yet, which its reported free space does not
	// know of: placement counts it taken, so that writers starting
	// together do not fill a node past what it has (HDFS's blocks
	// scheduled). placed is what was scheduled in this heartbeat's
	// interval and the one before: what a pipeline that never delivered
	// left in scheduled is forgotten after that.
	scheduled int64
	placed    [2]int64
	report    *fullReport // a full block report whose last part has not come yet
}

// fullReport is a full block report arriving in parts.
type fullReport struct {
	id   uint64
	next uint32 // the part expected next
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
	src blockSource
	// blocks is indexed by block id: block ids are handed out in
	// sequence, so its pages fill densely.
	blocks idtable.Table[blockInfo]
	// extra holds the replicas beyond a blockInfo's inline ones.
	extra map[uint64][]replicaRef
	// lens holds the lengths datanodes reported for the last block of a
	// file under construction, for lease recovery.
	lens map[uint64]map[string]uint64

	nodes   map[string]*datanode
	byIndex []*datanode // by datanode.index; [0] unused
	pending map[uint64]*pendingCopy
	// suspects are the blocks whose replication may be off: every change
	// of a block's replicas, of its file's wanted replication or of a
	// holder's state puts it here, and the replication monitor looks at
	// these only, not at every block every pass. A table of ids rather
	// than a Go map: a dead node makes every block it held a suspect, and
	// a million map inserts held the lock ~0.35 s. The monitor takes them
	// in id order from suspectFrom, round and round.
	suspects    idtable.Table[struct{}]
	suspectFrom uint64
	// rescanFrom, when not 0, is the block id the replication monitor's
	// scan of every block (at start, while block reports rebuild the map)
	// goes on from, scanPerPass of the lock a pass so that it never holds
	// the lock for the whole map. Blocks from there on are not recorded as
	// suspects meanwhile: the scan comes to them.
	rescanFrom uint64
	// withReplicas counts the blocks with at least one replica, for safe
	// mode, which would otherwise count them all every second.
	withReplicas int
}

func newBlockMap(src blockSource) *blockMap {
	return &blockMap{src: src, extra: map[uint64][]replicaRef{}, lens: map[uint64]map[string]uint64{},
		nodes: map[string]*datanode{}, byIndex: []*datanode{nil}, pending: map[uint64]*pendingCopy{},
		rescanFrom: 1}
}

// register adds dn to the datanode table, in place of an earlier
// registration of the same node, whose replicas must have been dropped.
func (bm *blockMap) register(dn *datanode) error {
	if old := bm.nodes[dn.uuid]; old != nil {
		dn.index = old.index
	} else {
		if len(bm.byIndex) > maxNodes {
			return fmt.Errorf("%d datanodes have registered since the master started, the most it tracks; restart it to forget the dead ones", maxNodes)
		}
		dn.index = nodeIndex(len(bm.byIndex))
		bm.byIndex = append(bm.byIndex, nil)
	}
	dn.storageID = "DS-" + dn.uuid
	bm.byIndex[dn.index] = dn
	bm.nodes[dn.uuid] = dn
	return nil
}

// recheck has the replication monitor look at block id again.
func (bm *blockMap) recheck(id uint64) {
	if bm.rescanFrom == 0 || id < bm.rescanFrom {
		bm.suspects.Put(id, struct{}{})
	}
}

// add records a new block of a file, with the pipeline targets as its
// expected replicas until the datanodes report.
func (bm *blockMap) add(fileID uint64, b namespace.Block, targets []string) {
	bm.dropReplicas(b.ID)
	bi := bm.blocks.Put(b.ID, newBlockInfo(fileID))
	for _, t := range targets {
		bm.addReplica(b.ID, bi, t, b.Len)
	}
}

// block is block id's stamp and length, from the namespace; ok is false
// for a block the map or the namespace does not have.
func (bm *blockMap) block(id uint64) (b namespace.Block, ok bool) {
	if bi := bm.blocks.Ptr(id); bi != nil {
		return bm.src.Block(bi.fileID(), id)
	}
	return namespace.Block{}, false
}

// resized counts a change of block id's length in its holders' bytes.
func (bm *blockMap) resized(r namespace.Resize) {
	if r.ID == 0 || r.Delta == 0 {
		return
	}
	for _, dn := range bm.replicas(r.ID) {
		dn.bytes += r.Delta
	}
}

// numReplicas is how many datanodes hold block id.
func (bm *blockMap) numReplicas(id uint64, bi *blockInfo) int {
	n := 0
	for n < inlineReplicas && bi.reps[n].node != 0 {
		n++
	}
	if n == inlineReplicas {
		n += len(bm.extra[id])
	}
	return n
}

// ref finds dn's replica of block id, or nil.
func (bm *blockMap) ref(id uint64, bi *blockInfo, dn *datanode) *replicaRef {
	for i := range bi.reps {
		if bi.reps[i].node == 0 {
			return nil
		} else if bi.reps[i].node == dn.index {
			return &bi.reps[i]
		}
	}
	ex := bm.extra[id]
	for i := range ex {
		if ex[i].node == dn.index {
			return &ex[i]
		}
	}
	return nil
}

// replicas returns the datanodes holding block id (none of them dead).
func (bm *blockMap) replicas(id uint64) []*datanode {
	bi := bm.blocks.Ptr(id)
	if bi == nil {
		return nil
	}
	out := make([]*datanode, 0, inlineReplicas)
	for _, r := range bi.reps {
		if r.node == 0 {
			return out
		}
		out = append(out, bm.byIndex[r.node])
	}
	for _, r := range bm.extra[id] {
		out = append(out, bm.byIndex[r.node])
	}
	return out
}

// addReplica records that datanode uuid holds a replica of block id, n
// bytes long in the namespace (if it is not recorded already), and returns
// where block id is in that node's list; ok is false for an unknown node.
func (bm *blockMap) addReplica(id uint64, bi *blockInfo, uuid string, n uint64) (pos uint32, ok bool) {
	dn := bm.nodes[uuid]
	if dn == nil {
		return 0, false
	}
	if r := bm.ref(id, bi, dn); r != nil {
		return r.pos(), true
	}
	r := newReplicaRef(dn.index, dn.blocks.add(id))
	dn.bytes += int64(n)
	switch n := bm.numReplicas(id, bi); {
	case n == 0:
		bm.withReplicas++
		bi.reps[0] = r
	case n < inlineReplicas:
		bi.reps[n] = r
	default:
		bm.extra[id] = append(bm.extra[id], r)
	}
	bm.recheck(id)
	return r.pos(), true
}

// unlink drops block id, at pos, from dn's list, and points the block
// moved into its place there.
func (bm *blockMap) unlink(dn *datanode, id uint64, pos uint32) {
	if moved, ok := dn.blocks.remove(id, pos); ok {
		bm.ref(moved, bm.blocks.Ptr(moved), dn).setPos(pos)
	}
}

// drop forgets dn's replica of block b, whose length dn's bytes counted.
func (bm *blockMap) drop(b namespace.Block, bi *blockInfo, dn *datanode) {
	if r, ok := bm.takeRef(b.ID, bi, dn.index); ok {
		dn.bytes -= int64(b.Len)
		bm.unlink(dn, b.ID, r.pos())
	}
}

// takeRef removes the replica on datanode index node (never 0: register
// hands out indexes from 1) from block id's replicas, keeping the inline
// ones packed.
func (bm *blockMap) takeRef(id uint64, bi *blockInfo, node nodeIndex) (replicaRef, bool) {
	ex := bm.extra[id]
	for i := range bi.reps {
		if bi.reps[i].node != node {
			continue
		}
		r := bi.reps[i]
		copy(bi.reps[i:], bi.reps[i+1:])
		bi.reps[inlineReplicas-1] = replicaRef{}
		if len(ex) > 0 {
			bi.reps[inlineReplicas-1] = ex[0]
			bm.setExtra(id, ex[1:])
		}
		if bi.reps[0].node == 0 {
			bm.withReplicas--
		}
		return r, true
	}
	for i := range ex {
		if ex[i].node == node {
			r := ex[i]
			bm.setExtra(id, append(ex[:i:i], ex[i+1:]...))
			return r, true
		}
	}
	return replicaRef{}, false
}

func (bm *blockMap) setExtra(id uint64, ex []replicaRef) {
	if len(ex) == 0 {
		delete(bm.extra, id)
	} else {
		bm.extra[id] = ex
	}
}

func (bm *blockMap) removeReplica(id uint64, uuid string) {
	dn := bm.nodes[uuid]
	if bi := bm.blocks.Ptr(id); bi != nil && dn != nil {
		b, _ := bm.src.Block(bi.fileID(), id)
		b.ID = id
		bm.drop(b, bi, dn)
	}
	bm.recheck(id)
	// A copy from a replica that is gone will not come.
	if p := bm.pending[id]; p != nil && p.source == uuid {
		bm.finishPending(id)
	}
}

// dropReplicas forgets every replica of block id.
func (bm *blockMap) dropReplicas(id uint64) {
	for _, dn := range bm.replicas(id) {
		bm.removeReplica(id, dn.uuid)
	}
}

// invalidateReplica drops a replica from the map and has its datanode
// delete it: a replica under the namespace's stamp for the block or an
// older one, never a newer one.
func (bm *blockMap) invalidateReplica(id uint64, uuid string) {
	b, _ := bm.block(id)
	bm.removeReplica(id, uuid)
	if dn := bm.nodes[uuid]; dn != nil {
		dn.orderDelete(id, b.GenStamp, 0)
	}
}

// orderDelete queues, for dn's next heartbeat reply, the order to delete
// its replica of block id under stamp gs or an older one (n bytes, 0 if
// any); a dead node gets none.
func (dn *datanode) orderDelete(id, gs, n uint64) {
	if !dn.dead {
		dn.invalidate = append(dn.invalidate, blockProto(id, gs, n))
	}
}

// free forgets blocks no file refers to (the namespace dropped them, so
// their stamps and lengths are these) and queues their replicas for
// deletion on the datanodes that hold them.
func (bm *blockMap) free(blocks []namespace.Block) {
	for _, b := range blocks {
		bi := bm.blocks.Ptr(b.ID)
		if bi == nil {
			continue
		}
		for _, dn := range bm.replicas(b.ID) {
			bm.drop(b, bi, dn)
			dn.orderDelete(b.ID, b.GenStamp, 0)
		}
		bm.finishPending(b.ID)
		bm.suspects.Delete(b.ID) // after finishPending, which rechecks
		bm.blocks.Delete(b.ID)
		delete(bm.lens, b.ID)
	}
}

// reportedLen remembers the length a datanode reported for the last
// block of a file being written, for lease recovery.
func (bm *blockMap) reportedLen(id uint64, uuid string, n uint64) {
	l := bm.lens[id]
	if l == nil {
		l = map[string]uint64{}
		bm.lens[id] = l
	}
	l[uuid] = n
}

// reported handles a datanode's report that it holds a finalized replica
// of block id, under generation stamp gs, n bytes long, and returns where
// the block is in the node's list once recorded. Replicas of unknown
// blocks or with a stamp older than the namespace's are queued for
// deletion (ok is false). A newer stamp is a pipeline recovery the
// namespace has not heard of yet (updatePipeline comes after the
// datanodes' reports).
func (bm *blockMap) reported(dn *datanode, id, gs, n uint64) (pos uint32, ok bool) {
	bi := bm.blocks.Ptr(id)
	var b namespace.Block
	if bi != nil {
		b, ok = bm.src.Block(bi.fileID(), id)
	}
	if !ok || gs < b.GenStamp {
		dn.orderDelete(id, gs, n)
		return 0, false
	}
	pos, ok = bm.addReplica(id, bi, dn.uuid, b.Len)
	if p := bm.pending[id]; p != nil && p.targets[dn.uuid] {
		delete(p.targets, dn.uuid)
		if len(p.targets) == 0 {
			if p.moveFrom != "" {
				bm.invalidateReplica(id, p.moveFrom) // another node: pos stands
			}
			bm.finishPending(id)
		}
	}
	return pos, ok
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
	for id := range dn.blocks.All() {
		bm.recheck(id)
	}
}

// nodeDead drops every replica of a dead datanode from the map.
func (bm *blockMap) nodeDead(dn *datanode) {
	for id := range dn.blocks.All() {
		if bi := bm.blocks.Ptr(id); bi != nil {
			bm.takeRef(id, bi, dn.index) // its list and bytes go whole below
		}
		bm.recheck(id)
		if p := bm.pending[id]; p != nil && p.source == dn.uuid {
			bm.finishPending(id)
		}
	}
	dn.blocks = blockList{}
	dn.bytes = 0
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
	out := bm.replicas(id)
	n := 0
	for _, dn := range out {
		if !dn.dead {
			out[n] = dn
			n++
		}
	}
	return out[:n]
}

// locations returns the live replicas of a block for a reader: the one on
// the client's host first, fresh nodes before stale ones, the rest in an
// order of their own for each block and client (rendezvous hashing), not
// shuffled anew for each request: reads of a block by one client go to the
// same replica again, whose datanode has it in its page cache (a replica
// just written is not; see the datanode's direct.go), while different
// blocks and clients spread over the replicas.
func (bm *blockMap) locations(id uint64, clientIP string, stale func(*datanode) bool) []*datanode {
	out := bm.holders(id)
	type key struct {
		dn            *datanode
		remote, stale bool
		rank          uint64
	}
	keys := make([]key, len(out))
	for i, dn := range out {
		keys[i] = key{dn, dn.info.GetId().GetIpAddr() != clientIP, stale(dn), readerRank(id, clientIP, dn.uuid)}
	}
	slices.SortFunc(keys, func(a, b key) int {
		return cmp.Or(cmp.Compare(btoi(a.remote), btoi(b.remote)), cmp.Compare(btoi(a.stale), btoi(b.stale)), cmp.Compare(b.rank, a.rank))
	})
	for i, k := range keys {
		out[i] = k.dn
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readerRank is datanode uuid's weight for client clientIP reading block
// id: FNV-1a of the three, mixed so that nearby ids rank unlike.
func readerRank(id uint64, clientIP, uuid string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], id)
	h.Write(b[:])
	h.Write([]byte(clientIP))
	h.Write([]byte{0})
	h.Write([]byte(uuid))
	x := h.Sum64()
	// splitmix64's finalizer: FNV's last bytes barely reach its high bits.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// placementNode describes dn to the placement policy.
func placementNode(dn *datanode, usable bool) placement.Node {
	return placement.Node{ID: dn.uuid, Addr: xferAddr(dn.info.GetId()), Host: dn.info.GetId().GetIpAddr(),
		Rack: dn.info.GetLocation(), Remaining: int64(dn.info.GetRemaining()) - dn.scheduled, Usable: usable}
}

// schedule counts a replica's room of n bytes taken on each chosen node
// until it is received (see datanode.scheduled).
func (bm *blockMap) schedule(chosen []placement.Node, n int64) {
	for _, c := range chosen {
		if dn := bm.nodes[c.ID]; dn != nil {
			dn.scheduled += n
			dn.placed[0] += n
		}
	}
}

// received gives back the room scheduled for a replica of n bytes' room
// that dn reports received.
func (dn *datanode) received(n int64) { dn.scheduled = max(dn.scheduled-n, 0) }

// heartbeat starts a new interval of placements: room scheduled before
// the last one is forgotten.
func (dn *datanode) heartbeat() {
	dn.placed[1], dn.placed[0] = dn.placed[0], 0
	dn.scheduled = min(dn.scheduled, dn.placed[1])
}

func xferAddr(id *pb.DatanodeIDProto) string { return xfer.Addr(id) }

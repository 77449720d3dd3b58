package master

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/placement"
	"github.com/godfs/godfs/protocol/pb"
)

// stale reports whether a live datanode has missed heartbeats for a while:
// it still counts as holding its replicas but gets no new ones and is read
// from last.
func (m *Master) stale(dn *datanode) bool {
	return !dn.dead && m.cfg.Now().Sub(dn.lastHeartbeat) > m.cfg.StaleAfter
}

// nodeState names a datanode's liveness for reports.
func (m *Master) nodeState(dn *datanode) string {
	switch {
	case dn.dead:
		return "dead"
	case m.stale(dn):
		return "stale"
	}
	return "live"
}

// placementNodesLocked describes every live datanode to the placement
// policy. m.mu must be held.
func (m *Master) placementNodesLocked() []placement.Node {
	var out []placement.Node
	for _, dn := range m.mu.blocks.live() {
		out = append(out, placementNode(dn, dn.inService() && !m.stale(dn)))
	}
	return out
}

// blockHealth is one block's replication as the monitor sees it.
type blockHealth struct {
	file    *namespace.Inode
	block   namespace.Block
	holders []*datanode // live nodes with a replica, in service or not
	counted int         // holders that are in service
	want    int
}

func (m *Master) newHealth(n *namespace.Inode, b namespace.Block) *blockHealth {
	h := &blockHealth{file: n, block: b, holders: m.mu.blocks.holders(b.ID), want: int(n.Replication())}
	for _, dn := range h.holders {
		if dn.inService() {
			h.counted++
		}
	}
	return h
}

// scanBlocksLocked calls fn for every block of every complete file.
// m.mu must be held.
func (m *Master) scanBlocksLocked(fn func(h *blockHealth)) {
	m.mu.tree.Files(func(n *namespace.Inode) {
		if n.UnderConstruction() {
			return
		}
		for i := range n.NumBlocks() {
			b := n.Block(i)
			fn(m.newHealth(n, b))
		}
	})
}

// healthLocked is the health of block id, or nil when the monitor has
// nothing to do with it (gone, or its file is still being written).
func (m *Master) healthLocked(id uint64) *blockHealth {
	n := m.blockFileLocked(id)
	if n == nil || n.UnderConstruction() {
		return nil
	}
	if i := n.BlockIndex(id); i >= 0 {
		return m.newHealth(n, n.Block(i))
	}
	return nil
}

// checksPerPass bounds the suspect blocks one monitor pass looks at, and
// so how long it holds the master's lock.
const checksPerPass = 20000

// scanPerPass bounds the time one monitor pass spends on the scan of
// every block after a start: at ~300 ns a block, 150,000 blocks a second
// (10 million in about a minute) with the lock never held longer.
var scanPerPass = 50 * time.Millisecond

// replicateLocked is the replication monitor's pass over the suspect
// blocks (and a stretch of every block, after a start): it queues copies of
// under-replicated blocks (fewest live replicas first), deletes extra
// replicas of over-replicated ones, tracks decommissioning and runs the
// balancer. Blocks it cannot copy yet stay suspect. m.mu must be held.
func (m *Master) replicateLocked() {
	now := m.cfg.Now()
	bm := m.mu.blocks
	for id, p := range bm.pending {
		if now.After(p.deadline) {
			m.log.Warn("copy timed out; will retry", "block", id)
			bm.finishPending(id)
		}
	}
	var under []*blockHealth
	visit := func(h *blockHealth) {
		if len(h.holders) == 0 {
			return // missing: nothing to copy from
		}
		p := bm.pending[h.block.ID]
		inFlight := 0
		if p != nil {
			inFlight = len(p.targets)
		}
		switch {
		case h.counted+inFlight < h.want:
			under = append(under, h)
		case h.counted > h.want && p == nil:
			var reps []placement.Node
			for _, dn := range h.holders {
				if dn.inService() {
					reps = append(reps, placementNode(dn, true))
				}
			}
			for _, x := range placement.Excess(reps, h.want) {
				m.log.Info("deleting extra replica", "block", h.block.ID, "datanode", x.Addr)
				bm.invalidateReplica(h.block.ID, x.ID)
			}
		}
	}
	if bm.rescanFrom != 0 {
		start := time.Now() // the lock's time, not the cluster's clock
		id, ok := bm.blocks.Next(bm.rescanFrom)
		for checked := 1; ok && (checked%256 != 0 || time.Since(start) < scanPerPass); checked++ {
			if h := m.healthLocked(id); h != nil {
				visit(h)
			}
			id, ok = bm.blocks.Next(id + 1)
		}
		bm.rescanFrom = id
		if !ok {
			bm.rescanFrom = 0
		}
	}
	id, ok := bm.suspects.Next(bm.suspectFrom)
	wrapped := false
	for checked := 0; checked < checksPerPass; checked++ {
		if !ok && !wrapped { // on from the lowest id
			wrapped = true
			id, ok = bm.suspects.Next(0)
		}
		if !ok {
			break
		}
		bm.suspects.Delete(id)
		if h := m.healthLocked(id); h != nil {
			visit(h)
		}
		bm.suspectFrom = id + 1
		id, ok = bm.suspects.Next(id + 1)
	}
	sort.SliceStable(under, func(i, j int) bool { return under[i].counted < under[j].counted })
	nodes := m.placementNodesLocked()
	budget := m.cfg.MaxTransfersPerNode * max(1, len(nodes))
	for _, h := range under {
		if budget > 0 && m.scheduleCopyLocked(h, nodes, "", now) {
			budget--
		} else {
			bm.recheck(h.block.ID) // no source, target or budget now: next pass
		}
	}
	m.decommissionProgressLocked()
	if m.mu.balanceThreshold > 0 && len(under) == 0 && bm.suspects.Len() == 0 && bm.rescanFrom == 0 {
		m.balanceLocked(nodes, now)
	}
}

// scheduleCopyLocked asks one holder of h's block to copy it to new
// targets. moveFrom, if set, is a replica to delete once the copy lands
// (balancing). It reports whether a copy was queued. m.mu must be held.
func (m *Master) scheduleCopyLocked(h *blockHealth, nodes []placement.Node, moveFrom string, now time.Time) bool {
	bm := m.mu.blocks
	var source *datanode
	for _, dn := range h.holders {
		if dn.sending >= m.cfg.MaxTransfersPerNode || m.stale(dn) {
			continue
		}
		if moveFrom != "" && dn.uuid != moveFrom {
			continue
		}
		// Prefer decommissioning nodes as sources: they serve no writes.
		if source == nil || (dn.admin != inService && source.admin == inService) {
			source = dn
		}
	}
	if source == nil {
		return false
	}
	need := h.want - h.counted
	if p := bm.pending[h.block.ID]; p != nil {
		need -= len(p.targets)
	}
	if moveFrom != "" {
		need = 1
	}
	var existing []placement.Node
	for _, dn := range h.holders {
		existing = append(existing, placementNode(dn, false))
	}
	// A node still due to delete an old replica of the block would refuse
	// the new one.
	exclude := map[string]bool{}
	for _, dn := range bm.nodes {
		for _, b := range dn.invalidate {
			if b.GetBlockId() == h.block.ID {
				exclude[dn.uuid] = true
			}
		}
	}
	targets := placement.Choose(nodes, placement.Request{N: need, Existing: existing, Exclude: exclude,
		BlockSize: int64(h.block.Len)}, m.cfg.Rand)
	if len(targets) == 0 {
		return false
	}
	bm.schedule(targets, int64(h.file.BlockSize()))
	cmd := &pb.BlockTransferCommandProto{Block: blockProto(h.block.ID, h.block.GenStamp, h.block.Len)}
	p := bm.pending[h.block.ID]
	if p == nil {
		p = &pendingCopy{source: source.uuid, targets: map[string]bool{}, moveFrom: moveFrom}
		bm.pending[h.block.ID] = p
		source.sending++
	}
	p.deadline = now.Add(m.cfg.CopyTimeout)
	for _, t := range targets {
		cmd.Targets = append(cmd.Targets, bm.nodes[t.ID].info)
		p.targets[t.ID] = true
	}
	source.transfers = append(source.transfers, cmd)
	m.log.Info("copying block", "block", h.block.ID, "from", xferAddr(source.info.GetId()),
		"to", len(targets), "live", h.counted, "want", h.want, "move", moveFrom != "")
	return true
}

// decommissionProgressLocked marks decommissioning nodes decommissioned
// once every block they hold has its full replication elsewhere.
// m.mu must be held.
func (m *Master) decommissionProgressLocked() {
	for _, dn := range m.mu.blocks.nodes {
		if dn.admin != decommissioning || dn.dead {
			continue
		}
		done := true
		for id := range dn.blocks.All() {
			// A block of a file being written is not done either.
			if h := m.healthLocked(id); h == nil || h.counted < h.want {
				done = false
				break
			}
		}
		if done {
			dn.admin = decommissioned
			m.log.Info("datanode decommissioned: safe to remove", "datanode", xferAddr(dn.info.GetId()))
		}
	}
}

// balanceLocked moves replicas from datanodes holding more than the mean
// (by more than the threshold) to those holding less. Usage is the bytes
// of the replicas the block map places on a node, counting moves in flight
// as done, relative to the mean, not to capacity: datanodes that share a
// disk balance too, and a node is not drained past the mean while its
// heartbeats lag. m.mu must be held.
func (m *Master) balanceLocked(nodes []placement.Node, now time.Time) {
	dev, _, _ := m.usageDeviationLocked()
	if dev <= m.mu.balanceThreshold && len(m.movesLocked()) == 0 {
		m.log.Info("cluster balanced; balancer stops", "maxDeviation", fmt.Sprintf("%.3f", dev))
		m.mu.balanceThreshold = 0
		return
	}
	// One move at a time, each planned against the usage the moves already
	// planned will leave, so a tick never overshoots into the other
	// direction.
	for planned := 0; planned < m.cfg.MaxTransfersPerNode*len(nodes); planned++ {
		_, over, under := m.usageDeviationLocked()
		if len(over) == 0 || len(under) == 0 || !m.planMoveLocked(over[0], under[0], nodes, now) {
			return
		}
	}
}

// planMoveLocked schedules the copy of one replica from src to dst whose
// source is deleted once the copy lands. m.mu must be held.
func (m *Master) planMoveLocked(src, dst *datanode, nodes []placement.Node, now time.Time) bool {
	if src.sending >= m.cfg.MaxTransfersPerNode {
		return false
	}
	var targets []placement.Node
	for _, n := range nodes {
		n.Usable = n.Usable && n.ID == dst.uuid
		targets = append(targets, n)
	}
	for id := range src.blocks.All() {
		if m.mu.blocks.pending[id] != nil {
			continue
		}
		if m.mu.blocks.ref(id, m.mu.blocks.blocks.Ptr(id), dst) != nil {
			continue
		}
		if h := m.healthLocked(id); h != nil {
			return m.scheduleCopyLocked(h, targets, src.uuid, now)
		}
	}
	return false
}

// movesLocked returns the balancer moves in flight. m.mu must be held.
func (m *Master) movesLocked() map[uint64]*pendingCopy {
	out := map[uint64]*pendingCopy{}
	for id, p := range m.mu.blocks.pending {
		if p.moveFrom != "" {
			out[id] = p
		}
	}
	return out
}

// usageDeviationLocked returns the largest relative deviation of a
// datanode's usage from the mean, and the nodes above (fullest first) and
// below (emptiest first) the balancer's band. m.mu must be held.
func (m *Master) usageDeviationLocked() (float64, []*datanode, []*datanode) {
	var nodes []*datanode
	used := map[string]float64{}
	for _, dn := range m.mu.blocks.live() {
		if dn.inService() && !m.stale(dn) {
			nodes = append(nodes, dn)
			used[dn.uuid] = float64(dn.bytes)
		}
	}
	for id, p := range m.movesLocked() {
		b, _ := m.mu.blocks.block(id)
		size := float64(b.Len)
		used[p.moveFrom] -= size
		for t := range p.targets {
			used[t] += size
		}
	}
	var total float64
	for _, dn := range nodes {
		total += used[dn.uuid]
	}
	if len(nodes) < 2 || total == 0 {
		return 0, nil, nil
	}
	mean := total / float64(len(nodes))
	var dev float64
	var over, under []*datanode
	th := m.mu.balanceThreshold
	for _, dn := range nodes {
		d := (used[dn.uuid] - mean) / mean
		dev = max(dev, d, -d)
		if d > th {
			over = append(over, dn)
		} else if d < -th {
			under = append(under, dn)
		}
	}
	// Fullest first among the over, emptiest first among the under.
	sort.Slice(over, func(i, j int) bool { return used[over[i].uuid] > used[over[j].uuid] })
	sort.Slice(under, func(i, j int) bool { return used[under[i].uuid] < used[under[j].uuid] })
	return dev, over, under
}

func blockProto(id, gs, n uint64) *pb.BlockProto {
	return &pb.BlockProto{BlockId: proto.Uint64(id), GenStamp: proto.Uint64(gs), NumBytes: proto.Uint64(n)}
}

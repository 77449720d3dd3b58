package master

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// blockInfo is the soft state the master keeps per block: which file it
// belongs to and which datanodes hold it. Never persisted; rebuilt from
// block reports.
type blockInfo struct {
	fileID   uint64
	genStamp uint64
	replicas []string // datanode uuids
}

// datanode is one registered datanode.
type datanode struct {
	uuid          string
	info          *pb.DatanodeInfoProto // id, address, rack, last reported usage
	lastHeartbeat time.Time
	dead          bool
	blocks        map[uint64]struct{} // replicas it holds (reverse of blockInfo.replicas)
	invalidate    []*pb.BlockProto    // replicas it must delete, sent with heartbeat replies
}

// blockMap is the master's block -> replicas map and its datanode table.
// It is not safe for concurrent use; the master's lock guards it.
type blockMap struct {
	blocks map[uint64]*blockInfo
	nodes  map[string]*datanode
}

func newBlockMap() *blockMap {
	return &blockMap{blocks: map[uint64]*blockInfo{}, nodes: map[string]*datanode{}}
}

// add records a new block of a file, with the pipeline targets as its
// expected replicas until the datanodes report.
func (bm *blockMap) add(fileID uint64, b namespace.Block, targets []string) {
	bi := &blockInfo{fileID: fileID, genStamp: b.GenStamp}
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
		if r == uuid {
			return
		}
	}
	bi.replicas = append(bi.replicas, uuid)
	dn.blocks[id] = struct{}{}
}

func (bm *blockMap) removeReplica(id uint64, uuid string) {
	if bi := bm.blocks[id]; bi != nil {
		for i, r := range bi.replicas {
			if r == uuid {
				bi.replicas = append(bi.replicas[:i], bi.replicas[i+1:]...)
				break
			}
		}
	}
	if dn := bm.nodes[uuid]; dn != nil {
		delete(dn.blocks, id)
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
		for _, uuid := range bi.replicas {
			if dn := bm.nodes[uuid]; dn != nil {
				delete(dn.blocks, b.ID)
				dn.invalidate = append(dn.invalidate, blockProto(b.ID, bi.genStamp, 0))
			}
		}
		delete(bm.blocks, b.ID)
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
	bm.addReplica(b.GetBlockId(), bi, dn.uuid)
}

// nodeDead drops every replica of a dead datanode from the map.
func (bm *blockMap) nodeDead(dn *datanode) {
	for id := range dn.blocks {
		bm.removeReplica(id, dn.uuid)
	}
	dn.dead = true
	dn.invalidate = nil
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

// locations returns the live replicas of a block, the one on the client's
// host first and the rest shuffled so reads spread over replicas.
func (bm *blockMap) locations(id uint64, clientIP string, rng *rand.Rand) []*datanode {
	bi := bm.blocks[id]
	if bi == nil {
		return nil
	}
	var out []*datanode
	for _, uuid := range bi.replicas {
		if dn := bm.nodes[uuid]; dn != nil && !dn.dead {
			out = append(out, dn)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	for i, dn := range out {
		if dn.info.GetId().GetIpAddr() == clientIP && i > 0 {
			out[0], out[i] = out[i], out[0]
			break
		}
	}
	return out
}

// choose picks up to n live datanodes for a new block, never one in
// exclude: the writer's own host first when it is a datanode, the rest at
// random. Rack-aware, space-weighted placement replaces this in its own
// package (issue #3).
func (bm *blockMap) choose(n int, clientIP string, exclude map[string]bool, rng *rand.Rand) []*datanode {
	var cands []*datanode
	for _, dn := range bm.live() {
		if !exclude[dn.uuid] && !exclude[xferAddr(dn.info.GetId())] {
			cands = append(cands, dn)
		}
	}
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	for i, dn := range cands {
		if dn.info.GetId().GetIpAddr() == clientIP && i > 0 {
			cands[0], cands[i] = cands[i], cands[0]
			break
		}
	}
	if len(cands) > n {
		cands = cands[:n]
	}
	return cands
}

func xferAddr(id *pb.DatanodeIDProto) string { return xfer.Addr(id) }

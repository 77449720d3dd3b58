package master

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
)

// maxInvalidatePerHeartbeat bounds the deletions sent in one heartbeat reply.
const maxInvalidatePerHeartbeat = 1000

func (m *Master) datanodeMethods() map[string]hrpc.Method {
	return map[string]hrpc.Method{
		"registerDatanode":        hrpc.Handle(newMsg[pb.RegisterDatanodeRequestProto], m.registerDatanode),
		"sendHeartbeat":           hrpc.Handle(newMsg[pb.HeartbeatRequestProto], m.sendHeartbeat),
		"blockReport":             hrpc.Handle(newMsg[pb.BlockReportRequestProto], m.blockReport),
		"blockReceivedAndDeleted": hrpc.Handle(newMsg[pb.BlockReceivedAndDeletedRequestProto], m.blockReceivedAndDeleted),
	}
}

// forgetDatanodeLocked drops what the master holds for datanode dn, dead
// or registering again: its replicas and its full-report lease. m.mu must
// be held.
func (m *Master) forgetDatanodeLocked(dn *datanode) {
	m.mu.blocks.nodeDead(dn)
	m.mu.reportLeases.release(dn.uuid)
}

func (m *Master) registerDatanode(ctx context.Context, req *pb.RegisterDatanodeRequestProto) (*pb.RegisterDatanodeResponseProto, error) {
	info := req.GetInfo().CloneVT()
	id := info.GetId()
	if id == nil || id.GetDatanodeUuid() == "" || id.GetXferPort() == 0 {
		return nil, fmt.Errorf("%w: registration without uuid or data port", protocol.ErrInvalidArgument)
	}
	// A datanode listening on all interfaces is reached at the address it
	// connected from.
	if ip := id.GetIpAddr(); ip == "" || ip == "0.0.0.0" || ip == "::" {
		id.IpAddr = proto.String(callerIP(ctx))
	}
	if id.GetHostName() == "" {
		id.HostName = id.IpAddr
	}
	if info.GetLocation() == "" {
		info.Location = proto.String("/default-rack")
	}
	err := m.locked(func() error {
		uuid := id.GetDatanodeUuid()
		if old := m.mu.blocks.nodes[uuid]; old != nil {
			m.forgetDatanodeLocked(old) // the block report that follows restores its replicas
		}
		dn := &datanode{uuid: uuid, info: info, lastHeartbeat: m.cfg.Now()}
		if m.mu.decommission[uuid] || m.mu.decommission[xferAddr(id)] {
			dn.admin = decommissioning
		}
		return m.mu.blocks.register(dn)
	})
	if err != nil {
		m.log.Error("datanode refused", "uuid", id.GetDatanodeUuid(), "addr", xferAddr(id), "err", err)
		return nil, fmt.Errorf("register datanode %s: %w", id.GetDatanodeUuid(), err)
	}
	m.log.Info("datanode registered", "uuid", id.GetDatanodeUuid(), "addr", xferAddr(id), "rack", info.GetLocation())
	return &pb.RegisterDatanodeResponseProto{BlockPoolId: proto.String(m.poolID)}, nil
}

func (m *Master) sendHeartbeat(ctx context.Context, req *pb.HeartbeatRequestProto) (*pb.HeartbeatResponseProto, error) {
	resp := &pb.HeartbeatResponseProto{}
	m.locked(func() error {
		dn := m.mu.blocks.nodes[req.GetDatanodeUuid()]
		if dn == nil || dn.dead {
			resp.Reregister = proto.Bool(true)
			return nil
		}
		dn.lastHeartbeat = m.cfg.Now()
		// dn.info is shared with responses being sent outside the lock:
		// replace it, never change it in place.
		info := dn.info.CloneVT()
		info.Capacity = proto.Uint64(req.GetCapacity())
		info.DfsUsed = proto.Uint64(req.GetDfsUsed())
		info.Remaining = proto.Uint64(req.GetRemaining())
		info.XceiverCount = proto.Uint32(req.GetXceiverCount())
		dn.info = info
		dn.heartbeat()
		if !m.mu.safeMode { // nothing is deleted until the block map is rebuilt
			n := min(len(dn.invalidate), maxInvalidatePerHeartbeat)
			resp.Invalidate = dn.invalidate[:n:n]
			dn.invalidate = dn.invalidate[n:]
		}
		resp.Transfers, dn.transfers = dn.transfers, nil
		resp.Recover, dn.recover = dn.recover, nil
		if req.GetWantReportLease() {
			resp.ReportLease = proto.Uint64(m.mu.reportLeases.grant(dn.uuid, m.cfg.Now()))
		}
		return nil
	})
	return resp, nil
}

// reportBatch bounds the replicas of a full block report taken per hold of
// the master's lock: a part of 500,000 replicas taken at once held it
// ~0.3 s, and every client waited that long.
var reportBatch = 10000

// testHookReportBatch, when set, runs between two batches of a report.
var testHookReportBatch func()

func (m *Master) blockReport(ctx context.Context, req *pb.BlockReportRequestProto) (*pb.BlockReportResponseProto, error) {
	uuid := req.GetDatanodeUuid()
	if len(req.GetReplicas())%3 != 0 {
		return nil, fmt.Errorf("%w: block report of %d numbers, not (id, stamp, length) triples", protocol.ErrInvalidArgument, len(req.GetReplicas()))
	}
	var dn *datanode
	var r *fullReport
	err := m.locked(func() error {
		dn = m.mu.blocks.nodes[uuid]
		if dn == nil || dn.dead {
			return fmt.Errorf("%w: datanode %s is not registered", protocol.ErrInvalidArgument, uuid)
		}
		// A report without the field comes from a datanode older than
		// report leases (a rolling upgrade starts with the master): taken,
		// as HDFS takes lease 0, or it could never report.
		if req.Lease != nil && !m.mu.reportLeases.use(uuid, req.GetLease(), m.cfg.Now()) {
			return fmt.Errorf("%w: block report %d of datanode %s is not under a lease it holds (ask for one in a heartbeat)",
				protocol.ErrInvalidArgument, req.GetReportId(), uuid)
		}
		part := req.GetPart()
		if part == 0 {
			dn.report = &fullReport{id: req.GetReportId()}
			dn.blocks.clearMarks()
		} else if r := dn.report; r == nil || r.id != req.GetReportId() || r.next != part {
			dn.report = nil
			m.mu.reportLeases.release(uuid)
			return fmt.Errorf("%w: block report %d: part %d out of order", protocol.ErrInvalidArgument, req.GetReportId(), part)
		}
		r = dn.report
		r.next++
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The lock is let go between batches: the node may re-register, die
	// or start another report meanwhile, and then this one is dropped.
	registered := func() bool { return m.mu.blocks.nodes[uuid] == dn && !dn.dead }
	current := func() error {
		if !registered() || dn.report != r {
			return fmt.Errorf("%w: block report %d of datanode %s: the datanode re-registered, died or reported again meanwhile",
				protocol.ErrInvalidArgument, r.id, uuid)
		}
		return nil
	}
	// Replica i of the report: from blocks (older datanodes), then from
	// the packed triples.
	blocks, packed := req.GetBlocks(), req.GetReplicas()
	replica := func(i int) (id, gs, n uint64) {
		if i < len(blocks) {
			b := blocks[i]
			return b.GetBlockId(), b.GetGenStamp(), b.GetNumBytes()
		}
		t := packed[3*(i-len(blocks)):]
		return t[0], t[1], t[2]
	}
	total := len(blocks) + len(packed)/3
	for start := 0; start < total; start += reportBatch {
		if err := m.locked(func() error {
			if err := current(); err != nil {
				return err
			}
			for i := start; i < min(total, start+reportBatch); i++ {
				id, gs, n := replica(i)
				if pos, kept, _ := m.reportedLocked(dn, id, gs, n); kept {
					dn.blocks.mark(id, pos)
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if testHookReportBatch != nil {
			testHookReportBatch()
		}
	}
	if req.GetMore() {
		return &pb.BlockReportResponseProto{}, nil
	}
	// The last part: the map forgets the replicas it expected on this node
	// that the node did not report (left unmarked), in batches.
	var gone []uint64
	err = m.locked(func() error {
		if err := current(); err != nil {
			return err
		}
		dn.report = nil
		m.mu.reportLeases.release(uuid) // the next report may start
		gone = slices.Collect(dn.blocks.Unmarked())
		return nil
	})
	if err != nil {
		return nil, err
	}
	for len(gone) > 0 {
		batch := gone[:min(len(gone), reportBatch)]
		gone = gone[len(batch):]
		m.locked(func() error {
			if !registered() {
				return nil // re-registered or died: its replicas went with it
			}
			for _, id := range batch {
				if !m.underConstructionLocked(id) {
					m.mu.blocks.removeReplica(id, uuid)
				}
			}
			return nil
		})
	}
	return &pb.BlockReportResponseProto{}, nil
}

// underConstructionLocked reports whether a block belongs to a file being
// written (its replicas may not be finalized yet). m.mu must be held.
func (m *Master) underConstructionLocked(id uint64) bool {
	bi := m.mu.blocks.blocks.Ptr(id)
	return bi != nil && m.mu.tree.UnderConstruction(bi.fileID()) != nil
}

// blockReceivedAndDeleted takes an incremental report in batches of
// reportBatch replicas per hold of the lock, as a full report is taken:
// one can carry the replicas of a whole failed volume. A dead datanode's
// report is dropped, and the rest of one whose datanode re-registers or
// dies half-way: the full report it sends on registering tells it all.
func (m *Master) blockReceivedAndDeleted(ctx context.Context, req *pb.BlockReceivedAndDeletedRequestProto) (*pb.BlockReceivedAndDeletedResponseProto, error) {
	uuid := req.GetDatanodeUuid()
	rcv, del, bad := req.GetReceived(), req.GetDeleted(), req.GetCorrupt()
	total := len(rcv) + len(del) + len(bad)
	var dn *datanode
	for start := 0; start < total; start += reportBatch {
		if start > 0 && testHookReportBatch != nil {
			testHookReportBatch()
		}
		stop := false
		m.locked(func() error {
			now := m.mu.blocks.nodes[uuid]
			if now == nil || now.dead || (dn != nil && now != dn) {
				stop = true
				return nil
			}
			dn = now
			for i := start; i < min(total, start+reportBatch); i++ {
				switch {
				case i < len(rcv):
					b := rcv[i]
					_, _, room := m.reportedLocked(dn, b.GetBlockId(), b.GetGenStamp(), b.GetNumBytes())
					dn.received(room)
				case i < len(rcv)+len(del):
					m.mu.blocks.removeReplica(del[i-len(rcv)].GetBlockId(), dn.uuid)
				default:
					b := bad[i-len(rcv)-len(del)]
					m.log.Warn("datanode found a corrupt replica; it will be replaced", "block", b.GetBlockId(), "datanode", xferAddr(dn.info.GetId()))
					m.mu.blocks.removeReplica(b.GetBlockId(), dn.uuid)
				}
			}
			return nil
		})
		if stop {
			break
		}
	}
	return &pb.BlockReceivedAndDeletedResponseProto{}, nil
}

// blockFileLocked is the file block id belongs to, nil for a block of no
// file. m.mu must be held.
func (m *Master) blockFileLocked(id uint64) *namespace.Inode {
	if bi := m.mu.blocks.blocks.Ptr(id); bi != nil {
		return m.mu.tree.File(bi.fileID())
	}
	return nil
}

// blockRoomLocked is the room a replica of block id is scheduled with: its
// file's block size (0 for a block of no file). m.mu must be held.
func (m *Master) blockRoomLocked(id uint64) int64 {
	if f := m.blockFileLocked(id); f != nil {
		return int64(f.BlockSize())
	}
	return 0
}

func sortDatanodes(d []*pb.DatanodeInfoProto) {
	sort.Slice(d, func(i, j int) bool { return xferAddr(d[i].GetId()) < xferAddr(d[j].GetId()) })
}

// reportedLocked records a replica a datanode reports (of block id, under
// stamp gs, n bytes long) and returns where the block is in the node's
// list if the replica is kept, and the room the replica was scheduled
// with (blockRoomLocked's, from the lookup it makes anyway). Beyond the
// block map's checks, it remembers lengths of blocks being written (for
// lease recovery) and deletes replicas of complete files whose length
// disagrees with the file (left over from a failed pipeline). m.mu must
// be held.
func (m *Master) reportedLocked(dn *datanode, id, gs, n uint64) (pos uint32, kept bool, room int64) {
	pos, kept = m.mu.blocks.reported(dn, id, gs, n)
	f := m.blockFileLocked(id)
	if f == nil {
		return pos, kept, 0
	}
	room = int64(f.BlockSize())
	if f.UnderConstruction() {
		m.mu.blocks.reportedLen(id, dn.uuid, n)
		return pos, kept, room
	}
	if i := f.BlockIndex(id); i >= 0 && f.Block(i).Len != n {
		m.log.Warn("replica length disagrees with the file; deleting it", "block", id,
			"datanode", xferAddr(dn.info.GetId()), "has", n, "file", f.Block(i).Len)
		m.mu.blocks.invalidateReplica(id, dn.uuid)
		return 0, false, room
	}
	return pos, kept, room
}

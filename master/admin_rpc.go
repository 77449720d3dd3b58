package master

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
)

func (m *Master) adminMethods() map[string]hrpc.Method {
	return map[string]hrpc.Method{
		"fsck":          hrpc.Handle(newMsg[pb.FsckRequestProto], m.fsck),
		"clusterReport": hrpc.Handle(newMsg[pb.ClusterReportRequestProto], m.clusterReport),
		"decommission":  hrpc.Handle(newMsg[pb.DecommissionRequestProto], m.decommission),
		"balance":       hrpc.Handle(newMsg[pb.BalanceRequestProto], m.balance),
		"abandonFile":   hrpc.Handle(newMsg[pb.AbandonFileRequestProto], m.abandonFile),
	}
}

// fsck checks the replication of every block of the files under a path.
func (m *Master) fsck(ctx context.Context, req *pb.FsckRequestProto) (*pb.FsckResponseProto, error) {
	resp := &pb.FsckResponseProto{Files: proto.Uint64(0), Directories: proto.Uint64(0), Blocks: proto.Uint64(0),
		Bytes: proto.Uint64(0), Missing: proto.Uint64(0), UnderReplicated: proto.Uint64(0), OverReplicated: proto.Uint64(0),
		FilesUnderConstruction: proto.Uint64(0)}
	max := int(req.GetMaxProblems())
	var files, dirs, blocks, bytes, missing, under, over, uc uint64
	problem := func(n *namespace.Inode, id uint64, live, want int, kind string) {
		if len(resp.Problems) >= max {
			resp.Truncated = proto.Bool(true)
			return
		}
		resp.Problems = append(resp.Problems, &pb.FsckProblemProto{Path: proto.String(n.Path()), BlockId: proto.Uint64(id),
			Live: proto.Uint32(uint32(live)), Expected: proto.Uint32(uint32(want)), Kind: proto.String(kind)})
	}
	err := m.walkTree(req.GetPath(), func(n *namespace.Inode) {
		if n.IsDir() {
			dirs++
			return
		}
		files++
		bytes += n.Len()
		if n.UnderConstruction() {
			uc++
		}
		bs := n.Blocks()
		for i, b := range bs {
			blocks++
			if n.UnderConstruction() && i == len(bs)-1 {
				continue // still being written
			}
			holders := m.mu.blocks.holders(b.ID)
			live := 0
			for _, dn := range holders {
				if dn.inService() {
					live++
				}
			}
			all := len(holders)
			want := int(n.Replication())
			switch {
			case all == 0:
				missing++
				problem(n, b.ID, 0, want, "MISSING")
			case live < want:
				under++
				problem(n, b.ID, live, want, "UNDER_REPLICATED")
			case live > want:
				over++
				problem(n, b.ID, live, want, "OVER_REPLICATED")
			}
		}
	})
	resp.Files, resp.Directories, resp.Blocks, resp.Bytes = &files, &dirs, &blocks, &bytes
	resp.Missing, resp.UnderReplicated, resp.OverReplicated, resp.FilesUnderConstruction = &missing, &under, &over, &uc
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (m *Master) clusterReport(ctx context.Context, req *pb.ClusterReportRequestProto) (*pb.ClusterReportResponseProto, error) {
	resp := &pb.ClusterReportResponseProto{}
	m.locked(func() error {
		for _, dn := range m.mu.blocks.nodes {
			info := dn.info.CloneVT()
			info.LastUpdate = proto.Uint64(uint64(dn.lastHeartbeat.UnixMilli()))
			info.NumBlocks = proto.Uint32(uint32(dn.blocks.Len()))
			info.AdminState = dn.admin.proto().Enum()
			resp.Datanodes = append(resp.Datanodes, &pb.DatanodeStatusProto{Info: info,
				State: proto.String(m.nodeState(dn)), Transfers: proto.Uint32(uint32(dn.sending))})
		}
		var under, deletions uint64
		m.scanBlocksLocked(func(h *blockHealth) {
			if h.counted < h.want {
				under++
			}
		})
		for _, dn := range m.mu.blocks.nodes {
			deletions += uint64(len(dn.invalidate))
		}
		resp.SafeMode = proto.Bool(m.mu.safeMode)
		resp.SafeModeStatus = proto.String(m.safeModeStatusLocked())
		resp.Blocks = proto.Uint64(uint64(m.mu.blocks.blocks.Len()))
		resp.UnderReplicated = proto.Uint64(under)
		resp.PendingReplications = proto.Uint64(uint64(len(m.mu.blocks.pending)))
		resp.PendingDeletions = proto.Uint64(deletions)
		resp.BalanceThreshold = proto.Float64(m.mu.balanceThreshold)
		return nil
	})
	sort.Slice(resp.Datanodes, func(i, j int) bool {
		return xferAddr(resp.Datanodes[i].GetInfo().GetId()) < xferAddr(resp.Datanodes[j].GetInfo().GetId())
	})
	return resp, nil
}

// decommission starts (or cancels) moving every replica off a datanode;
// the node is DECOMMISSIONED, safe to remove, once none is left only there.
func (m *Master) decommission(ctx context.Context, req *pb.DecommissionRequestProto) (*pb.DecommissionResponseProto, error) {
	var state string
	err := m.locked(func() error {
		var dn *datanode
		for _, d := range m.mu.blocks.nodes {
			if d.uuid == req.GetNode() || xferAddr(d.info.GetId()) == req.GetNode() {
				dn = d
			}
		}
		if dn == nil {
			known := make([]string, 0, len(m.mu.blocks.nodes))
			for _, d := range m.mu.blocks.nodes {
				known = append(known, xferAddr(d.info.GetId()))
			}
			sort.Strings(known)
			return &fs.PathError{Op: "decommission", Path: req.GetNode(),
				Err: fmt.Errorf("%w: no such datanode (known: %s)", fs.ErrNotExist, strings.Join(known, ", "))}
		}
		if req.GetCancel() {
			delete(m.mu.decommission, dn.uuid)
			dn.admin = inService
		} else {
			m.mu.decommission[dn.uuid] = true
			if dn.admin == inService {
				dn.admin = decommissioning
			}
		}
		m.mu.blocks.recheckNode(dn)
		if err := m.saveDecommissionLocked(); err != nil {
			return fmt.Errorf("save decommission list: %w", err)
		}
		state = dn.admin.proto().String()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.DecommissionResponseProto{State: proto.String(state)}, nil
}

// balance starts (or stops) the balancer, and reports how balanced the
// cluster is.
func (m *Master) balance(ctx context.Context, req *pb.BalanceRequestProto) (*pb.BalanceResponseProto, error) {
	th := req.GetThreshold()
	if !req.GetStop() && (th <= 0 || th >= 1) {
		return nil, fmt.Errorf("%w: threshold %v must be between 0 and 1 (0.1 = within 10%% of the mean)", protocol.ErrInvalidArgument, th)
	}
	resp := &pb.BalanceResponseProto{}
	m.locked(func() error {
		m.mu.balanceThreshold = th
		if req.GetStop() {
			m.mu.balanceThreshold = 0
		}
		dev, _, _ := m.usageDeviationLocked()
		moving := len(m.movesLocked())
		balanced := dev <= th && moving == 0
		if balanced {
			m.mu.balanceThreshold = 0
		}
		resp.Balanced = proto.Bool(balanced)
		resp.MaxDeviation = proto.Float64(dev)
		resp.Moving = proto.Uint32(uint32(moving))
		return nil
	})
	return resp, nil
}

// setSafeMode is ClientProtocol's safe mode switch (hdfs dfsadmin -safemode).
func (m *Master) setSafeMode(ctx context.Context, req *pb.SetSafeModeRequestProto) (*pb.SetSafeModeResponseProto, error) {
	var on bool
	m.locked(func() error {
		switch req.GetAction() {
		case pb.SafeModeActionProto_SAFEMODE_ENTER:
			m.mu.safeMode, m.mu.safeModeManual = true, true
		case pb.SafeModeActionProto_SAFEMODE_LEAVE, pb.SafeModeActionProto_SAFEMODE_FORCE_EXIT:
			m.mu.safeMode, m.mu.safeModeManual = false, false
		}
		on = m.mu.safeMode
		return nil
	})
	return &pb.SetSafeModeResponseProto{Result: proto.Bool(on)}, nil
}

// abandonFile drops a file its own writer gave up on (the write failed and
// the client knows it): a new file disappears with its blocks rather than
// being closed with a prefix as lease recovery would.
func (m *Master) abandonFile(ctx context.Context, req *pb.AbandonFileRequestProto) (*pb.AbandonFileResponseProto, error) {
	err := m.update(func() error {
		n := m.mu.tree.UnderConstruction(req.GetFileId())
		if n == nil || n.Client() != req.GetClientName() {
			return &fs.PathError{Op: "abandon", Path: req.GetSrc(), Err: protocol.ErrNoLease}
		}
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAbandonFile, FileID: n.ID(), Time: m.nowMillis()})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.AbandonFileResponseProto{}, nil
}

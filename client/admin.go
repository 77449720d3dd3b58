package client

import (
	"context"
	"fmt"
	"io/fs"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
)

// adminClient returns the connection for godfs's admin protocol.
func (c *Client) adminClient() *hrpc.Client {
	c.adminOnce.Do(func() {
		c.admin = hrpc.NewClient(c.addr, hrpc.ClientOptions{Protocol: protocol.AdminProtocol, User: c.user})
	})
	return c.admin
}

func (c *Client) adminCall(ctx context.Context, method string, req, resp proto.Message) error {
	err := c.adminClient().Call(ctx, method, req, resp)
	if err != nil && isNetErr(err) {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.addr, err)
	}
	return err
}

// SetReplication changes a file's replication; the master then copies or
// deletes replicas to match.
func (c *Client) SetReplication(ctx context.Context, name string, n int) error {
	resp := &pb.SetReplicationResponseProto{}
	req := &pb.SetReplicationRequestProto{Src: proto.String(name), Replication: proto.Uint32(uint32(n))}
	if err := c.call(ctx, "setReplication", req, resp); err != nil {
		return pathErr("setrep", name, err)
	}
	if !resp.GetResult() {
		return &fs.PathError{Op: "setrep", Path: name, Err: ErrIsDir}
	}
	return nil
}

// FsckProblem is one block fsck found wanting.
type FsckProblem struct {
	Path     string
	BlockID  uint64
	Live     int // replicas on live, in-service datanodes
	Expected int
	Kind     string // MISSING, UNDER_REPLICATED, OVER_REPLICATED
}

// FsckReport is the health of the files under a path.
type FsckReport struct {
	Files, Dirs, Blocks, Bytes                           int64
	Missing, UnderReplicated, OverReplicated, UnderConst int64
	Problems                                             []FsckProblem
	Truncated                                            bool // more problems than listed
}

// Healthy reports whether no data is lost or at risk.
func (r *FsckReport) Healthy() bool {
	return r.Missing == 0 && r.UnderReplicated == 0
}

// Fsck checks the replication of every block under path.
func (c *Client) Fsck(ctx context.Context, path string) (*FsckReport, error) {
	resp := &pb.FsckResponseProto{}
	if err := c.adminCall(ctx, "fsck", &pb.FsckRequestProto{Path: proto.String(path)}, resp); err != nil {
		return nil, pathErr("fsck", path, err)
	}
	r := &FsckReport{Files: int64(resp.GetFiles()), Dirs: int64(resp.GetDirectories()), Blocks: int64(resp.GetBlocks()),
		Bytes: int64(resp.GetBytes()), Missing: int64(resp.GetMissing()), UnderReplicated: int64(resp.GetUnderReplicated()),
		OverReplicated: int64(resp.GetOverReplicated()), UnderConst: int64(resp.GetFilesUnderConstruction()), Truncated: resp.GetTruncated()}
	for _, p := range resp.GetProblems() {
		r.Problems = append(r.Problems, FsckProblem{Path: p.GetPath(), BlockID: p.GetBlockId(), Live: int(p.GetLive()),
			Expected: int(p.GetExpected()), Kind: p.GetKind()})
	}
	return r, nil
}

// ClusterReport is the master's view of the cluster.
type ClusterReport struct {
	Datanodes           []DatanodeInfo
	SafeMode            bool
	SafeModeStatus      string
	Blocks              int64
	UnderReplicated     int64
	PendingReplications int64
	PendingDeletions    int64
	Balancing           bool
}

// Report returns the cluster report: datanodes with their state, safe
// mode, replication work.
func (c *Client) Report(ctx context.Context) (*ClusterReport, error) {
	resp := &pb.ClusterReportResponseProto{}
	if err := c.adminCall(ctx, "clusterReport", &pb.ClusterReportRequestProto{}, resp); err != nil {
		return nil, err
	}
	r := &ClusterReport{SafeMode: resp.GetSafeMode(), SafeModeStatus: resp.GetSafeModeStatus(), Blocks: int64(resp.GetBlocks()),
		UnderReplicated: int64(resp.GetUnderReplicated()), PendingReplications: int64(resp.GetPendingReplications()),
		PendingDeletions: int64(resp.GetPendingDeletions()), Balancing: resp.GetBalanceThreshold() > 0}
	for _, d := range resp.GetDatanodes() {
		info := datanodeInfo(d.GetInfo())
		info.State = d.GetState()
		info.Live = d.GetState() != "dead"
		info.Transfers = int(d.GetTransfers())
		r.Datanodes = append(r.Datanodes, info)
	}
	return r, nil
}

// Decommission starts moving every replica off a datanode (by data address
// or uuid); cancel stops it. It returns the node's admin state.
func (c *Client) Decommission(ctx context.Context, node string, cancel bool) (string, error) {
	resp := &pb.DecommissionResponseProto{}
	if err := c.adminCall(ctx, "decommission", &pb.DecommissionRequestProto{Node: proto.String(node), Cancel: proto.Bool(cancel)}, resp); err != nil {
		return "", pathErr("decommission", node, err)
	}
	return resp.GetState(), nil
}

// BalanceStatus is the balancer's answer.
type BalanceStatus struct {
	Balanced     bool
	MaxDeviation float64 // largest relative deviation of a datanode's usage from the mean
	Moving       int     // block moves in flight
}

// Balance starts the balancer (or, with threshold 0, stops it) and reports
// the current state; call it again to follow progress.
func (c *Client) Balance(ctx context.Context, threshold float64) (BalanceStatus, error) {
	resp := &pb.BalanceResponseProto{}
	req := &pb.BalanceRequestProto{Threshold: proto.Float64(threshold), Stop: proto.Bool(threshold == 0)}
	if err := c.adminCall(ctx, "balance", req, resp); err != nil {
		return BalanceStatus{}, err
	}
	return BalanceStatus{Balanced: resp.GetBalanced(), MaxDeviation: resp.GetMaxDeviation(), Moving: int(resp.GetMoving())}, nil
}

// SafeMode gets or changes the master's safe mode: action is "get",
// "enter" or "leave". It returns whether safe mode is on.
func (c *Client) SafeMode(ctx context.Context, action string) (bool, error) {
	a := map[string]pb.SafeModeActionProto{"get": pb.SafeModeActionProto_SAFEMODE_GET,
		"enter": pb.SafeModeActionProto_SAFEMODE_ENTER, "leave": pb.SafeModeActionProto_SAFEMODE_LEAVE}
	act, ok := a[action]
	if !ok {
		return false, fmt.Errorf("%w: safe mode action %q (get, enter, leave)", protocol.ErrInvalidArgument, action)
	}
	resp := &pb.SetSafeModeResponseProto{}
	if err := c.call(ctx, "setSafeMode", &pb.SetSafeModeRequestProto{Action: act.Enum()}, resp); err != nil {
		return false, err
	}
	return resp.GetResult(), nil
}

func datanodeInfo(di *pb.DatanodeInfoProto) DatanodeInfo {
	return DatanodeInfo{UUID: di.GetId().GetDatanodeUuid(), Addr: xferAddr(di.GetId()),
		Rack: di.GetLocation(), Capacity: int64(di.GetCapacity()), Used: int64(di.GetDfsUsed()),
		Remaining: int64(di.GetRemaining()), Blocks: int(di.GetNumBlocks()),
		LastHeartbeat: time.UnixMilli(int64(di.GetLastUpdate())), Admin: di.GetAdminState().String()}
}

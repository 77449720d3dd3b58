// Package datanode stores block replicas on local disks and serves them
// over HDFS's DataTransferProtocol: it receives blocks in a write pipeline
// (forwarding to the next datanode while writing), serves reads with
// checksums, and reports to the master by heartbeats and block reports.
package datanode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// Options configure a DataNode. Zero fields take the defaults noted.
type Options struct {
	// DataDirs are the directories replicas are stored in. Required.
	DataDirs []string
	// Listen is the DataTransferProtocol address. Default 127.0.0.1:9866;
	// port 0 picks a free port.
	Listen string
	// Master is the master's RPC address. Default 127.0.0.1:8020.
	Master string
	// Rack is the datanode's network location. Default /default-rack.
	Rack string
	// HeartbeatInterval is the time between heartbeats. Default 3s.
	HeartbeatInterval time.Duration
	// BlockReportInterval is the time between full block reports. Default 1h.
	BlockReportInterval time.Duration
	// BlockReportPart bounds the replicas in one call of a block report,
	// full or incremental (about 20 bytes each on the wire; a call is at
	// most 64 MiB); a bigger report goes in parts. Default 500,000.
	BlockReportPart int
	// ScanPeriod is how often every replica's checksums are re-verified.
	// Default 24h.
	ScanPeriod time.Duration
	// ScanRate bounds the scanner's reads, in bytes per second. Default
	// 16 MiB/s; negative means unlimited.
	ScanRate int64
	// TransferRate bounds each block copy made for re-replication or
	// balancing, in bytes per second. Default 64 MiB/s; negative means
	// unlimited.
	TransferRate int64
	// MaxTransfers bounds the copies this datanode makes at once. Default 2.
	MaxTransfers int
	// Reserved is the space on each volume left to other uses (HDFS's
	// dfs.datanode.du.reserved): replicas do not take it, and it is not
	// counted in the free space the master is told of. Default 0.
	Reserved int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// EnsureDefaults fills zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:9866"
	}
	if o.Master == "" {
		o.Master = protocol.DefaultMasterAddr
	}
	if o.Rack == "" {
		o.Rack = "/default-rack"
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 3 * time.Second
	}
	if o.BlockReportInterval == 0 {
		o.BlockReportInterval = time.Hour
	}
	if o.BlockReportPart == 0 {
		o.BlockReportPart = 500_000
	}
	if o.ScanPeriod == 0 {
		o.ScanPeriod = 24 * time.Hour
	}
	if o.ScanRate == 0 {
		o.ScanRate = 16 << 20
	}
	if o.TransferRate == 0 {
		o.TransferRate = 64 << 20
	}
	if o.MaxTransfers == 0 {
		o.MaxTransfers = 2
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate reports options that cannot work.
func (o *Options) Validate() error {
	if len(o.DataDirs) == 0 {
		return errors.New("datanode: at least one data directory is required")
	}
	if o.BlockReportPart < 0 {
		return fmt.Errorf("datanode: block report part of %d replicas; want a positive number", o.BlockReportPart)
	}
	if o.Reserved < 0 {
		return fmt.Errorf("datanode: reserved space of %d bytes; want 0 or more", o.Reserved)
	}
	return nil
}

// DataNode is a running datanode.
type DataNode struct {
	opts   Options
	log    *slog.Logger
	store  *store
	uuid   string
	ln     net.Listener
	master *hrpc.Client

	xceivers atomic.Int32 // operations in progress

	ibr     ibrQueue // incremental block reports waiting to be sent
	ibrKick chan struct{}

	transferSlots chan struct{} // bounds concurrent block copies

	poolMu sync.Mutex
	pool   string // block pool id, learnt when registering

	connsMu sync.Mutex
	conns   map[net.Conn]struct{}
	// peers keeps connections to the next datanodes of pipelines that
	// finished cleanly, for the next pipeline through them.
	peers xfer.Peers

	stop chan struct{}
	wg   sync.WaitGroup
	// fatal, once set, is why the datanode stopped serving on its own
	// (every volume failed): what Serve returns.
	fatal atomic.Pointer[error]
}

// identity is persisted in the first data directory.
type identity struct {
	DatanodeUUID string `json:"datanodeUuid"`
	BlockPoolID  string `json:"blockPoolId,omitempty"`
}

// New opens the data directories and indexes the replicas on them.
func New(opts Options) (*DataNode, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	st, err := openStore(opts.DataDirs, opts.Reserved)
	if err != nil {
		return nil, fmt.Errorf("datanode: %w", err)
	}
	id, err := loadIdentity(opts.DataDirs[0])
	if err != nil {
		return nil, err
	}
	d := &DataNode{opts: opts, log: opts.Logger, store: st, uuid: id.DatanodeUUID,
		ibrKick: make(chan struct{}, 1), conns: map[net.Conn]struct{}{}, stop: make(chan struct{}),
		transferSlots: make(chan struct{}, opts.MaxTransfers)}
	d.master = hrpc.NewClient(opts.Master, hrpc.ClientOptions{Protocol: protocol.DatanodeProtocol, User: "datanode"})
	_, n := st.usage()
	d.log.Info("datanode storage opened", "dirs", opts.DataDirs, "replicas", n, "uuid", d.uuid)
	return d, nil
}

func identityPath(dir string) string { return filepath.Join(dir, "VERSION") }

func loadIdentity(dir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(identityPath(dir))
	if err == nil {
		if err := json.Unmarshal(b, &id); err != nil || id.DatanodeUUID == "" {
			return id, fmt.Errorf("datanode: %s is damaged", identityPath(dir))
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return id, fmt.Errorf("datanode: %w", err)
	}
	r := make([]byte, 16)
	rand.Read(r)
	id.DatanodeUUID = hex.EncodeToString(r)
	return id, saveIdentity(dir, id)
}

func saveIdentity(dir string, id identity) error {
	b, _ := json.Marshal(id)
	tmp := identityPath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("datanode: %w", err)
	}
	f, err := os.Open(tmp)
	if err == nil {
		f.Sync()
		f.Close()
	}
	if err := os.Rename(tmp, identityPath(dir)); err != nil {
		return fmt.Errorf("datanode: %w", err)
	}
	return syncDir(dir)
}

// Listen binds the data transfer address. Addr is valid after it returns.
func (d *DataNode) Listen() error {
	ln, err := net.Listen("tcp", d.opts.Listen)
	if err != nil {
		return fmt.Errorf("datanode: listen: %w", err)
	}
	d.ln = ln
	return nil
}

// Addr is the bound data transfer address.
func (d *DataNode) Addr() string { return d.ln.Addr().String() }

// UUID identifies the datanode to the master.
func (d *DataNode) UUID() string { return d.uuid }

// Serve serves data transfers and talks to the master until Close.
func (d *DataNode) Serve() error {
	if d.ln == nil {
		if err := d.Listen(); err != nil {
			return err
		}
	}
	d.wg.Add(2)
	go d.masterLoop()
	go d.scanLoop()
	d.log.Info("datanode serving", "data", d.Addr(), "master", d.opts.Master)
	for {
		c, err := d.ln.Accept()
		if err != nil {
			select {
			case <-d.stop:
				return nil
			default:
			}
			if fatal := d.fatal.Load(); fatal != nil {
				return *fatal
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		d.connsMu.Lock()
		d.conns[c] = struct{}{}
		d.connsMu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.serveConn(c)
			d.connsMu.Lock()
			delete(d.conns, c)
			d.connsMu.Unlock()
		}()
	}
}

// Close stops serving; replicas being received are dropped (their writers
// were not acked).
func (d *DataNode) Close() error {
	select {
	case <-d.stop:
		return nil
	default:
	}
	close(d.stop)
	if d.ln != nil {
		d.ln.Close()
	}
	d.connsMu.Lock()
	for c := range d.conns {
		c.Close()
	}
	d.connsMu.Unlock()
	d.master.Close()
	d.peers.Close()
	d.wg.Wait()
	return d.store.close()
}

// datanodeID describes this datanode on the wire.
func (d *DataNode) datanodeID() *pb.DatanodeIDProto {
	host, portStr, _ := net.SplitHostPort(d.Addr())
	port, _ := strconv.Atoi(portStr)
	hostname, _ := os.Hostname()
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		host = "" // the master uses the address we connect from
	}
	return &pb.DatanodeIDProto{IpAddr: proto.String(host), HostName: proto.String(hostname),
		DatanodeUuid: proto.String(d.uuid), XferPort: proto.Uint32(uint32(port)),
		InfoPort: proto.Uint32(0), IpcPort: proto.Uint32(0)}
}

// masterLoop registers with the master, then sends heartbeats,
// incremental reports and full reports: the first right after
// registering, then periodic ones, each under a lease a heartbeat asked
// for (the master admits a few at a time). Any failure leads back to
// registering.
func (d *DataNode) masterLoop() {
	defer d.wg.Done()
	registered := false
	var (
		reported   bool      // a full report went since registering
		nextReport time.Time // when one is due after that
	)
	// A heartbeat goes every interval; incremental reports go as soon as
	// there is something to report, without one.
	beat := time.NewTimer(d.opts.HeartbeatInterval)
	defer beat.Stop()
	beatDue := true
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		now := false // go round again without waiting for the next heartbeat
		switch {
		case !registered:
			if err = d.register(ctx); err == nil {
				registered, reported, now, beatDue = true, false, true, true
			}
		default:
			if err = d.sendIBR(ctx); err == nil && beatDue {
				beatDue = false
				due := !reported || time.Now().After(nextReport)
				var again bool
				var lease uint64
				again, lease, err = d.heartbeat(ctx, due)
				switch {
				case again:
					registered, now = false, true // re-register at once when asked to
				case err == nil && due && lease != 0:
					if err = d.blockReport(ctx, lease); err == nil {
						interval := d.opts.BlockReportInterval
						if !reported {
							interval = firstPeriodicReport(interval)
						}
						reported, nextReport = true, time.Now().Add(interval)
					}
				}
			}
		}
		cancel()
		select {
		case <-d.stop: // closing: the failure is our own closed client
			return
		default:
		}
		if err != nil {
			d.log.Warn("master unreachable", "master", d.opts.Master, "err", err)
			registered = false
		}
		if now && err == nil {
			continue
		}
		select {
		case <-d.stop:
			return
		case <-beat.C:
			beatDue = true
			beat.Reset(d.opts.HeartbeatInterval)
		case <-d.ibrKick:
			// Blocks that finish meanwhile go in the same report: with 16
			// clients writing 4 KiB files, 19 blocks a report instead of 2.5
			// (BenchmarkSmallWrite). The master counts a block's pipeline as
			// its replicas from addBlock on, so readers do not wait for it.
			select {
			case <-d.stop:
				return
			case <-time.After(reportGathering):
			}
		}
	}
}

// reportGathering is how long a datanode waits, once a block is received
// or deleted, for others to report with it.
const reportGathering = 10 * time.Millisecond

// firstPeriodicReport is how long after registering a datanode sends its
// first periodic full report: a random point of the interval (then one
// every interval). Datanodes that register together (a cluster brought
// up, a master restarted) would otherwise all report in the same second
// every interval after; HDFS's datanodes spread theirs the same way.
func firstPeriodicReport(interval time.Duration) time.Duration {
	return time.Duration(1 + mrand.Int64N(int64(interval)))
}

func (d *DataNode) register(ctx context.Context) error {
	total, free := d.store.capacity()
	used, _ := d.store.usage()
	req := &pb.RegisterDatanodeRequestProto{Info: &pb.DatanodeInfoProto{Id: d.datanodeID(),
		Capacity: proto.Uint64(total), DfsUsed: proto.Uint64(uint64(used)), Remaining: proto.Uint64(free),
		Location: proto.String(d.opts.Rack)}}
	resp := &pb.RegisterDatanodeResponseProto{}
	if err := d.master.Call(ctx, "registerDatanode", req, resp); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	id, err := loadIdentity(d.opts.DataDirs[0])
	if err != nil {
		return err
	}
	d.poolMu.Lock()
	d.pool = resp.GetBlockPoolId()
	d.poolMu.Unlock()
	switch id.BlockPoolID {
	case resp.GetBlockPoolId():
	case "":
		id.BlockPoolID = resp.GetBlockPoolId()
		if err := saveIdentity(d.opts.DataDirs[0], id); err != nil {
			return err
		}
	default:
		// Joining another cluster's master would have it delete every
		// replica here as unknown. Refuse instead.
		err := fmt.Errorf("datanode holds blocks of pool %s but master %s serves pool %s; refusing to join",
			id.BlockPoolID, d.opts.Master, resp.GetBlockPoolId())
		d.log.Error(err.Error())
		return err
	}
	return nil
}

// blockReport sends a full block report under lease.
func (d *DataNode) blockReport(ctx context.Context, lease uint64) error {
	all := d.store.list()
	id := mrand.Uint64()
	for part := uint32(0); ; part++ {
		n := min(len(all), d.opts.BlockReportPart)
		req := &pb.BlockReportRequestProto{DatanodeUuid: proto.String(d.uuid), ReportId: proto.Uint64(id),
			Part: proto.Uint32(part), More: proto.Bool(n < len(all)), Lease: proto.Uint64(lease)}
		req.Replicas = make([]uint64, 0, 3*n)
		for _, b := range all[:n] {
			req.Replicas = append(req.Replicas, b.ID, b.GenStamp, uint64(b.Len))
		}
		if err := d.master.Call(ctx, "blockReport", req, &pb.BlockReportResponseProto{}); err != nil {
			return fmt.Errorf("block report (part %d): %w", part, err)
		}
		if all = all[n:]; len(all) == 0 {
			return nil
		}
	}
}

// heartbeat tells the master the node is alive, asks for a full-report
// lease when wantLease, and carries out what the answer asks for. It
// returns the lease granted (0 for none).
func (d *DataNode) heartbeat(ctx context.Context, wantLease bool) (reregister bool, lease uint64, err error) {
	d.checkVolumes()
	total, free := d.store.capacity()
	used, n := d.store.usage()
	req := &pb.HeartbeatRequestProto{DatanodeUuid: proto.String(d.uuid), Capacity: proto.Uint64(total),
		DfsUsed: proto.Uint64(uint64(used)), Remaining: proto.Uint64(free), NumBlocks: proto.Uint32(uint32(n)),
		XceiverCount: proto.Uint32(uint32(d.xceivers.Load())), WantReportLease: proto.Bool(wantLease)}
	resp := &pb.HeartbeatResponseProto{}
	if err := d.master.Call(ctx, "sendHeartbeat", req, resp); err != nil {
		return false, 0, fmt.Errorf("heartbeat: %w", err)
	}
	for _, b := range resp.GetInvalidate() {
		removed, err := d.store.remove(b.GetBlockId(), b.GetGenStamp())
		if err != nil {
			d.log.Error("delete replica", "block", b.GetBlockId(), "err", err)
		}
		if removed {
			d.queueIBR(nil, b)
		}
	}
	d.runTransfers(resp.GetTransfers())
	d.runRecoveries(resp.GetRecover())
	return resp.GetReregister(), resp.GetReportLease(), nil
}

// checkVolumes takes the volumes that fail their check out of service and
// tells the master their replicas are gone, as deletions: it copies them
// again from the other replicas.
func (d *DataNode) checkVolumes() {
	lost, failed := d.store.checkVolumes()
	for dir, err := range failed {
		d.log.Error("volume failed: no new replicas go to it; its replicas are reported lost", "dir", dir, "err", err)
	}
	if len(failed) > 0 {
		d.log.Error("replicas lost with failed volumes", "replicas", len(lost))
	}
	for _, b := range lost {
		d.queueIBR(nil, &pb.BlockProto{BlockId: proto.Uint64(b.ID), GenStamp: proto.Uint64(b.GenStamp), NumBytes: proto.Uint64(uint64(b.Len))})
	}
	if len(failed) > 0 && d.store.working() == 0 {
		// Nothing left to serve: stop, as HDFS's datanodes do, so that
		// whoever runs it sees it; the master copies its replicas from
		// the others once it is dead.
		err := fmt.Errorf("datanode: every data directory has failed (%d replicas lost)", len(lost))
		if d.fatal.CompareAndSwap(nil, &err) {
			d.log.Error("stopping: every data directory has failed")
			d.ln.Close()
		}
	}
}

func (d *DataNode) poolID() string {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	return d.pool
}

// queueIBR queues an incremental block report and wakes the master loop.
func (d *DataNode) queueIBR(received, deleted *pb.BlockProto) {
	d.ibr.add(received, deleted, nil)
	d.kickIBR()
}

// kickIBR wakes the master loop to send incremental reports now.
func (d *DataNode) kickIBR() {
	select {
	case d.ibrKick <- struct{}{}:
	default:
	}
}

// sendIBR tells the master what is queued, in calls of at most
// BlockReportPart entries, until a call takes what is left.
func (d *DataNode) sendIBR(ctx context.Context) error {
	for {
		rcv, del, bad := d.ibr.take(d.opts.BlockReportPart)
		n := len(rcv) + len(del) + len(bad)
		if n == 0 {
			return nil
		}
		req := &pb.BlockReceivedAndDeletedRequestProto{DatanodeUuid: proto.String(d.uuid), Received: rcv, Deleted: del, Corrupt: bad}
		if err := d.master.Call(ctx, "blockReceivedAndDeleted", req, &pb.BlockReceivedAndDeletedResponseProto{}); err != nil {
			// Keep them for the next try; a full report after
			// re-registering covers them anyway.
			d.ibr.putBack(rcv, del, bad)
			return fmt.Errorf("incremental block report: %w", err)
		}
		if n < d.opts.BlockReportPart {
			return nil // what was queued is sent; newer entries go next time
		}
	}
}

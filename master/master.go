package master

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/oplog"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
)

// Master is a running master. Create it with New, then Serve.
type Master struct {
	cfg    Config
	log    *slog.Logger
	oplog  *oplog.Log
	rpc    *hrpc.Server
	ln     net.Listener
	poolID string

	// mu guards everything below. Handlers hold it while they read or
	// change state and release it before waiting for the op log to sync.
	mu struct {
		sync.Mutex
		tree       *namespace.Tree
		blocks     *blockMap
		leases     map[string]time.Time // client name -> last renewal
		checkpoint uint64               // index of the last checkpoint
		// checkpointing is set while a checkpoint is written in the
		// background; the next one may start at nextCheckpoint. The last
		// one worked checkpointWork (paced, it took 4x that).
		checkpointing  bool
		nextCheckpoint time.Time
		checkpointWork time.Duration
		failed         error // set when the op log fails: no more changes
		// safeMode: after a restart, until enough blocks have reported
		// replicas, the master serves reads only and deletes nothing.
		safeMode         bool
		safeModeManual   bool            // entered by an operator: left only by one
		decommission     map[string]bool // datanode uuids or addresses being decommissioned (persisted)
		balanceThreshold float64         // > 0 while the balancer runs
		reportLeases     *reportLeases   // full block reports admitted now
		// blockIDsSkipped is set once this master, since it loaded its
		// namespace, skipped past the block ids an earlier run may have
		// handed out without their addBlock reaching the log (see addBlock).
		blockIDsSkipped bool
	}

	stop chan struct{}
	done sync.WaitGroup
	ckpt sync.WaitGroup // a background checkpoint
}

// identity is the cluster identity persisted in the master's directory.
type identity struct {
	BlockPoolID string `json:"blockPoolId"`
	Created     int64  `json:"created"`
}

// New opens (or formats) the master's directory, loads the checkpoint and
// replays the op log. It does not listen yet.
func New(cfg Config) (*Master, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	m := &Master{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	id, err := loadIdentity(cfg.Dir, cfg.Now())
	if err != nil {
		return nil, err
	}
	m.poolID = id.BlockPoolID
	var tree *namespace.Tree
	withoutGC(func() { tree, err = oplog.LoadCheckpoint(cfg.Dir, nil) })
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	hadCheckpoint := tree != nil
	if tree == nil {
		tree = namespace.New(currentUser(), cfg.SuperGroup, cfg.Now().UnixMilli())
	}
	m.mu.checkpoint = tree.LastIndex()
	m.oplog, err = oplog.Open(cfg.Dir, m.log)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	replayed := 0
	err = m.oplog.Replay(tree.LastIndex(), func(e *namespace.Entry) error {
		replayed++
		_, err := tree.Apply(e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	m.mu.tree = tree
	if !hadCheckpoint {
		// A master starts with a checkpoint (of its empty tree, when new):
		// later ones are built from the last one and the log, and the
		// root's owner and times must come from here.
		if err := oplog.SaveCheckpoint(cfg.Dir, tree, nil); err != nil {
			return nil, fmt.Errorf("master: %w", err)
		}
		m.mu.checkpoint = tree.LastIndex()
	}
	m.mu.blocks = newBlockMap(tree)
	if m.mu.decommission, err = loadDecommission(cfg.Dir); err != nil {
		return nil, err
	}
	// Every block of every file is known, with no replicas yet: block
	// reports fill those in. (A block missing here would make reports of
	// it look like garbage to delete.)
	withoutGC(func() {
		tree.Files(func(n *namespace.Inode) {
			for i := range n.NumBlocks() {
				m.mu.blocks.add(n.ID(), n.Block(i), nil)
			}
		})
	})
	m.mu.safeMode = m.mu.blocks.blocks.Len() > 0
	m.mu.leases = map[string]time.Time{}
	m.mu.reportLeases = newReportLeases(cfg.MaxReportLeases, cfg.ReportLeaseTimeout)
	// Writers get a full lease period after a restart to come back.
	now := cfg.Now()
	tree.FilesUnderConstruction(func(n *namespace.Inode) { m.mu.leases[n.Client()] = now })
	m.log.Info("master state loaded", "dir", cfg.Dir, "checkpoint", m.mu.checkpoint,
		"replayed", replayed, "index", tree.LastIndex(), "blockPool", m.poolID)
	m.rpc = hrpc.NewServer(m.log)
	m.rpc.Register(protocol.ClientProtocol, m.clientMethods())
	m.rpc.Register(protocol.DatanodeProtocol, m.datanodeMethods())
	m.rpc.Register(protocol.AdminProtocol, m.adminMethods())
	if oplog.HasOldCheckpoint(cfg.Dir) {
		// What a shutdown or a crash left of the checkpoint before the
		// last goes as a background checkpoint's would; none starts
		// meanwhile.
		m.mu.checkpointing = true
		m.ckpt.Add(1)
		go func() {
			defer m.ckpt.Done()
			m.removeOldCheckpoint()
			m.mu.Lock()
			m.mu.checkpointing = false
			m.mu.Unlock()
		}()
	}
	return m, nil
}

// withoutGC runs fn with the garbage collector off. Loading a checkpoint
// and building the block map allocate what stays live, so collections
// during them only mark a growing heap again and again: a third of a
// 3-million-file restart went to that.
func withoutGC(fn func()) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	fn()
}

func loadIdentity(dir string, now time.Time) (identity, error) {
	p := filepath.Join(dir, "VERSION")
	var id identity
	b, err := os.ReadFile(p)
	if err == nil {
		if err := json.Unmarshal(b, &id); err != nil || id.BlockPoolID == "" {
			return id, fmt.Errorf("master: %s is damaged: %v", p, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return id, fmt.Errorf("master: %w", err)
	}
	r := make([]byte, 8)
	rand.Read(r)
	id = identity{BlockPoolID: "BP-godfs-" + hex.EncodeToString(r), Created: now.UnixMilli()}
	b, _ = json.Marshal(id)
	if err := writeFileSync(p, b); err != nil {
		return id, fmt.Errorf("master: %w", err)
	}
	return id, nil
}

func writeFileSync(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

// Listen binds the RPC address. Addr is valid after it returns.
func (m *Master) Listen() error {
	ln, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("master: listen: %w", err)
	}
	m.ln = ln
	return nil
}

// Addr is the bound RPC address.
func (m *Master) Addr() string { return m.ln.Addr().String() }

// Serve serves RPCs and runs the background loop until Close.
func (m *Master) Serve() error {
	if m.ln == nil {
		if err := m.Listen(); err != nil {
			return err
		}
	}
	m.done.Add(1)
	go m.loop()
	m.log.Info("master serving", "rpc", m.Addr())
	return m.rpc.Serve(m.ln)
}

// Close stops serving, checkpoints and closes the op log.
func (m *Master) Close() error {
	select {
	case <-m.stop:
		return nil
	default:
	}
	close(m.stop)
	m.rpc.Close()
	m.done.Wait()
	m.ckpt.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.checkpointLocked()
	if cerr := m.oplog.Close(); err == nil {
		err = cerr
	}
	return err
}

func (m *Master) loop() {
	defer m.done.Done()
	t := time.NewTicker(m.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.tick()
		}
	}
}

// tick declares silent datanodes dead, leaves safe mode when it can,
// expires leases, runs the replication monitor and checkpoints.
func (m *Master) tick() {
	now := m.cfg.Now()
	var last uint64
	m.mu.Lock()
	defer func() {
		m.mu.Unlock()
		if err := m.oplog.Sync(last); err != nil {
			m.log.Error("op log sync", "err", err)
		}
	}()
	for _, dn := range m.mu.blocks.nodes {
		if !dn.dead && now.Sub(dn.lastHeartbeat) > m.cfg.DeadAfter {
			m.log.Warn("datanode dead", "uuid", dn.uuid, "addr", xferAddr(dn.info.GetId()),
				"silentFor", now.Sub(dn.lastHeartbeat).Round(time.Second))
			m.forgetDatanodeLocked(dn)
		}
	}
	last = m.mu.tree.LastIndex()
	if m.mu.safeMode {
		m.checkSafeModeLocked()
		return
	}
	var expired []*namespace.Inode
	m.mu.tree.FilesUnderConstruction(func(n *namespace.Inode) {
		if now.Sub(m.mu.leases[n.Client()]) > m.cfg.LeaseLimit {
			expired = append(expired, n)
		}
	})
	if len(expired) > 0 && m.oplog.Ready() != nil {
		// A full disk: recovery's entries wait for room in the op log, as
		// clients' changes do (see change), and the files stay open.
		expired = nil
	}
	for _, n := range expired {
		m.log.Warn("lease hard limit passed; recovering the file", "path", n.Path(), "client", n.Client())
		if err := m.recoverLeaseLocked(n); err != nil {
			m.log.Error("lease recovery", "path", n.Path(), "err", err)
		}
	}
	m.replicateLocked()
	last = m.mu.tree.LastIndex()
	m.startCheckpointLocked(now)
}

// update runs fn with m.mu held, then waits until every entry fn applied
// is durable, so the caller answers "ok" only for logged changes.
func (m *Master) update(fn func() error) error {
	return m.change(func() (bool, error) { return true, fn() })
}

// change is update for a change that may answer before its entries are
// durable: fn says whether the caller must wait for the log. Only a change
// nobody else can observe may skip the wait, one that a later waiting
// change by the same client (whose entries follow it in the log) makes
// durable before anything depends on it.
func (m *Master) change(fn func() (wait bool, err error)) error {
	m.mu.Lock()
	if m.mu.failed != nil {
		err := m.mu.failed
		m.mu.Unlock()
		return err
	}
	if m.mu.safeMode {
		err := fmt.Errorf("%w: %s", protocol.ErrSafeMode, m.safeModeStatusLocked())
		m.mu.Unlock()
		return err
	}
	// Refused before the tree changes: a change applied but not logged
	// would stop the master (see applyLocked).
	if err := m.oplog.Ready(); err != nil {
		m.mu.Unlock()
		return err
	}
	before := m.mu.tree.LastIndex()
	wait, err := fn()
	after := m.mu.tree.LastIndex()
	m.mu.Unlock()
	if after > before && wait {
		if serr := m.oplog.Sync(after); serr != nil {
			return fmt.Errorf("op log: %w", serr)
		}
	}
	return err
}

// locked runs fn with m.mu held: for reads, and for changes to soft state
// (block map, datanodes, leases) that are not logged. Namespace changes go
// through update.
func (m *Master) locked(fn func() error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn()
}

// applyLocked numbers, applies and logs one entry, and frees the blocks it
// released. m.mu must be held. A failed Apply changes nothing; a failed
// log append stops all further changes, since memory is then ahead of disk.
func (m *Master) applyLocked(e *namespace.Entry) (namespace.Result, error) {
	e.Index = m.mu.tree.LastIndex() + 1
	res, err := m.mu.tree.Apply(e)
	if err != nil {
		return res, err
	}
	if err := m.oplog.Append(e); err != nil {
		m.mu.failed = fmt.Errorf("master stopped accepting changes: %w", err)
		m.log.Error("op log append failed", "err", err)
		return res, m.mu.failed
	}
	if len(res.Freed) > 0 {
		m.mu.blocks.free(res.Freed)
	}
	m.mu.blocks.resized(res.Resized)
	switch e.Type {
	case namespace.OpComplete, namespace.OpSetReplication, namespace.OpTruncate, namespace.OpReportBlock:
		// The file's blocks start being monitored, or want another count.
		if res.Inode != nil && !res.Inode.UnderConstruction() {
			for i := range res.Inode.NumBlocks() {
				m.mu.blocks.recheck(res.Inode.Block(i).ID)
			}
		}
	}
	return res, nil
}

// renewLeaseLocked records that client is alive. m.mu must be held.
func (m *Master) renewLeaseLocked(client string) {
	if client != "" {
		m.mu.leases[client] = m.cfg.Now()
	}
}

func (m *Master) nowMillis() int64 { return m.cfg.Now().UnixMilli() }

// callerIP is the IP the caller connects from, to prefer its local replica.
func callerIP(ctx context.Context) string {
	if a, ok := hrpc.CallerFrom(ctx).Addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

func errorsIs(err, target error) bool { return err != nil && errors.Is(err, target) }

// LiveDatanodes is the number of datanodes currently considered live.
func (m *Master) LiveDatanodes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.blocks.live())
}

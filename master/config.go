// Package master is godfs's metadata service: it owns the namespace (a
// state machine fed by a durable op log), the soft-state block map rebuilt
// from datanode reports, datanode liveness, leases and placement, and it
// serves HDFS's ClientProtocol and godfs's datanode protocol over Hadoop RPC.
package master

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/godfs/godfs/protocol"
)

// Config configures a Master. Zero fields take the defaults noted.
type Config struct {
	// Dir holds the op log, the checkpoint and the cluster identity.
	// Required.
	Dir string
	// Listen is the Hadoop RPC address. Default 127.0.0.1:8020.
	Listen string
	// BlockSize is the default block size handed to clients. Default 64 MiB.
	BlockSize uint64
	// Replication is the default replication. Default 3.
	Replication uint16
	// StaleAfter is how long a datanode may go without a heartbeat before it
	// is stale: it gets no new replicas and is read from last. Default 10s.
	StaleAfter time.Duration
	// DeadAfter is how long a datanode may go without a heartbeat before it
	// is declared dead and its replicas are copied elsewhere. Default 30s.
	DeadAfter time.Duration
	// MaxTransfersPerNode bounds the block copies (re-replication,
	// balancing) a datanode sends at once, so that recovery cannot starve
	// clients. Default 2.
	MaxTransfersPerNode int
	// CopyTimeout is how long the master waits for a copy to be reported
	// before it schedules it again. Default 1m.
	CopyTimeout time.Duration
	// SafeModeThreshold is the fraction of blocks that must have a reported
	// replica before a restarted master leaves safe mode. Default 0.999.
	SafeModeThreshold float64
	// LeaseSoftLimit is how long a writer may go without renewing its
	// lease before another client asking for the file makes the master
	// recover it. Default 60s.
	LeaseSoftLimit time.Duration
	// LeaseLimit (the hard limit) is how long a writer may go without
	// renewing its lease before the master recovers its files on its own.
	// Default 10m.
	LeaseLimit time.Duration
	// MaxReportLeases is how many datanodes may be sending a full block
	// report at once (HDFS's dfs.namenode.max.full.block.report.leases).
	// Default 6.
	MaxReportLeases int
	// ReportLeaseTimeout is how long a full-report lease lasts unused (it
	// is renewed by every part of the report). Default 5m.
	ReportLeaseTimeout time.Duration
	// CheckpointEvery is the number of logged entries between checkpoints.
	// Default 1000000, as HDFS's dfs.namenode.checkpoint.txns: a crash
	// then replays at most ~1-2 s of log after the checkpoint, and a busy
	// master writes its namespace out a twentieth as often as every 50000
	// (the paced creates' p99 in godfs bench: 7.0-16.3 against 10.7-30.2
	// ms in four alternating pairs).
	CheckpointEvery uint64
	// TickInterval is how often the master checks liveness, leases and
	// checkpoints. Default 1s.
	TickInterval time.Duration
	// SuperGroup is the group of new files and directories. Default
	// "supergroup", as in HDFS.
	SuperGroup string

	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the random source for placement. Default: seeded from the
	// runtime.
	Rand *rand.Rand
}

// DefaultConfig returns a Config for a master storing its state in dir.
func DefaultConfig(dir string) Config {
	c := Config{Dir: dir}
	c.EnsureDefaults()
	return c
}

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.Listen == "" {
		c.Listen = protocol.DefaultMasterAddr
	}
	if c.BlockSize == 0 {
		c.BlockSize = protocol.DefaultBlockSize
	}
	if c.Replication == 0 {
		c.Replication = protocol.DefaultReplication
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = 30 * time.Second
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = min(10*time.Second, c.DeadAfter/2)
	}
	if c.MaxTransfersPerNode == 0 {
		c.MaxTransfersPerNode = 2
	}
	if c.CopyTimeout == 0 {
		c.CopyTimeout = time.Minute
	}
	if c.SafeModeThreshold == 0 {
		c.SafeModeThreshold = 0.999
	}
	if c.LeaseLimit == 0 {
		c.LeaseLimit = 10 * time.Minute
	}
	if c.LeaseSoftLimit == 0 {
		c.LeaseSoftLimit = min(time.Minute, c.LeaseLimit)
	}
	if c.MaxReportLeases == 0 {
		c.MaxReportLeases = 6
	}
	if c.ReportLeaseTimeout == 0 {
		c.ReportLeaseTimeout = 5 * time.Minute
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 1000000
	}
	if c.TickInterval == 0 {
		c.TickInterval = time.Second
	}
	if c.SuperGroup == "" {
		c.SuperGroup = "supergroup"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("master: a data directory is required")
	case c.BlockSize < protocol.BytesPerChecksum || c.BlockSize%protocol.BytesPerChecksum != 0:
		return fmt.Errorf("master: block size %d must be a positive multiple of %d", c.BlockSize, protocol.BytesPerChecksum)
	case c.SafeModeThreshold < 0 || c.SafeModeThreshold > 1:
		return fmt.Errorf("master: safe mode threshold %v must be between 0 and 1", c.SafeModeThreshold)
	case c.StaleAfter > c.DeadAfter:
		return fmt.Errorf("master: stale-after %v must not exceed dead-after %v", c.StaleAfter, c.DeadAfter)
	case c.MaxReportLeases < 0:
		return fmt.Errorf("master: max report leases %d must be positive", c.MaxReportLeases)
	case c.Replication > MaxReplication:
		return fmt.Errorf("master: replication %d is above the maximum %d", c.Replication, MaxReplication)
	}
	return nil
}

// Limits on what clients may ask for.
const (
	MaxReplication = 512
	MinBlockSize   = 64 << 10
	MaxBlockSize   = 32 << 30
)

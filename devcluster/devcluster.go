// Package devcluster runs a whole godfs cluster (one master, N datanodes)
// in one process: what `godfs dev` and `godfs bench --dev` start. The
// servers are the same ones `godfs master` and `godfs datanode` run.
package devcluster

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/godfs/godfs/datanode"
	"github.com/godfs/godfs/master"
)

// Config configures a dev cluster.
type Config struct {
	Dir         string // all state lives under it
	Listen      string // master RPC address; default 127.0.0.1:8020
	DataNodes   int    // default 3
	BlockSize   uint64 // default 64 MiB
	Replication uint16 // default 3
	// BlockReportPart bounds the replicas per block-report call; default
	// the datanode's.
	BlockReportPart int
	Logger          *slog.Logger
}

// Cluster is a running dev cluster.
type Cluster struct {
	Master    *master.Master
	DataNodes []*datanode.DataNode
	errs      chan error
}

// Start starts the master and the datanodes and waits until every datanode
// has registered.
func Start(cfg Config) (*Cluster, error) {
	if cfg.DataNodes == 0 {
		cfg.DataNodes = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	mc := master.DefaultConfig(filepath.Join(cfg.Dir, "master"))
	if cfg.Listen != "" {
		mc.Listen = cfg.Listen
	}
	if cfg.BlockSize != 0 {
		mc.BlockSize = cfg.BlockSize
	}
	if cfg.Replication != 0 {
		mc.Replication = cfg.Replication
	}
	mc.Logger = cfg.Logger.With("node", "master")
	m, err := master.New(mc)
	if err != nil {
		return nil, err
	}
	if err := m.Listen(); err != nil {
		m.Close()
		return nil, err
	}
	c := &Cluster{Master: m, errs: make(chan error, cfg.DataNodes+1)}
	go func() { c.errs <- m.Serve() }()
	for i := 0; i < cfg.DataNodes; i++ {
		d, err := datanode.New(datanode.Options{
			DataDirs:          []string{filepath.Join(cfg.Dir, fmt.Sprintf("datanode%d", i+1))},
			Listen:            "127.0.0.1:0",
			Master:            m.Addr(),
			HeartbeatInterval: time.Second,
			BlockReportPart:   cfg.BlockReportPart,
			Logger:            cfg.Logger.With("node", fmt.Sprintf("datanode%d", i+1)),
		})
		if err == nil {
			err = d.Listen()
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		c.DataNodes = append(c.DataNodes, d)
		go func() { c.errs <- d.Serve() }()
	}
	if err := c.waitRegistered(30 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) waitRegistered(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.Master.LiveDatanodes() >= len(c.DataNodes) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("devcluster: datanodes did not register in time")
}

// Addr is the master's RPC address.
func (c *Cluster) Addr() string { return c.Master.Addr() }

// Err returns a channel that yields the error of a server that stopped.
func (c *Cluster) Err() <-chan error { return c.errs }

// Close stops the datanodes, then the master (which checkpoints).
func (c *Cluster) Close() error {
	var errs []error
	for _, d := range c.DataNodes {
		errs = append(errs, d.Close())
	}
	errs = append(errs, c.Master.Close())
	return errors.Join(errs...)
}

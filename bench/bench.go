// Package bench measures godfs's streaming write and read throughput
// against a baseline measured in the same run on the same machine (a plain
// local file copy), since absolute numbers on shared machines mean little.
package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/godfs/godfs/client"
)

// Config says what to measure.
type Config struct {
	Master       string // master address
	Size         int64  // bytes per file
	BlockSize    int64  // 0: the master's default
	Replications []int  // one put/get pair per replication
	TempDir      string // where the local source and copies go
	Out          io.Writer
}

// Result is one measurement.
type Result struct {
	Name    string
	Bytes   int64
	Elapsed time.Duration
}

// MBps is the throughput in MB/s (10^6 bytes).
func (r Result) MBps() float64 { return float64(r.Bytes) / 1e6 / r.Elapsed.Seconds() }

// Run writes a random source file, measures the local copy baseline, then
// a put and a get per replication, and prints a table.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	src := filepath.Join(cfg.TempDir, "bench-src")
	if err := writeRandomFile(src, cfg.Size); err != nil {
		return nil, err
	}
	defer os.Remove(src)
	var results []Result
	base, err := timed("local copy (baseline)", cfg.Size, func() error {
		return copyLocal(src, filepath.Join(cfg.TempDir, "bench-copy"))
	})
	os.Remove(filepath.Join(cfg.TempDir, "bench-copy"))
	if err != nil {
		return nil, err
	}
	results = append(results, base)
	c := client.New(cfg.Master)
	defer c.Close()
	for _, repl := range cfg.Replications {
		name := fmt.Sprintf("/.bench/file-r%d", repl)
		c.Remove(ctx, name, false)
		put, err := timed(fmt.Sprintf("put, replication %d", repl), cfg.Size, func() error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			w, err := c.Create(ctx, name, client.Replication(repl), client.BlockSize(cfg.BlockSize), client.CreateParents())
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, f); err != nil {
				w.Close()
				return err
			}
			return w.Close()
		})
		if err != nil {
			return results, err
		}
		dst := filepath.Join(cfg.TempDir, "bench-get")
		get, err := timed(fmt.Sprintf("get, replication %d", repl), cfg.Size, func() error {
			r, err := c.Open(ctx, name)
			if err != nil {
				return err
			}
			defer r.Close()
			f, err := os.Create(dst)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(f, r); err != nil {
				return err
			}
			return f.Sync()
		})
		os.Remove(dst)
		c.Remove(ctx, name, false)
		if err != nil {
			return results, err
		}
		results = append(results, put, get)
	}
	c.Remove(ctx, "/.bench", true)
	if cfg.Out != nil {
		fmt.Fprintf(cfg.Out, "%-24s %10s %10s %8s\n", "operation", "size", "MB/s", "vs copy")
		for _, r := range results {
			fmt.Fprintf(cfg.Out, "%-24s %10d %10.1f %7.2fx\n", r.Name, r.Bytes, r.MBps(), r.MBps()/base.MBps())
		}
	}
	return results, nil
}

func timed(name string, n int64, fn func() error) (Result, error) {
	start := time.Now()
	if err := fn(); err != nil {
		return Result{}, fmt.Errorf("%s: %w", name, err)
	}
	return Result{Name: name, Bytes: n, Elapsed: time.Since(start)}, nil
}

// writeRandomFile writes n pseudo-random (incompressible) bytes and syncs.
func writeRandomFile(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	if _, err := io.CopyN(f, rng, n); err != nil {
		return err
	}
	return f.Sync()
}

// copyLocal is the baseline: what cp does, plus the fsync godfs does too.
func copyLocal(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}

func rngReader() io.Reader { return rand.NewChaCha8([32]byte{4, 5, 6}) }

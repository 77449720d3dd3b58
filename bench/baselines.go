package bench

import (
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/godfs/godfs/internal/datasync"
)

// measureBaselines measures what godfs's figures are compared with. The
// create baseline makes its files in the empty directory createDir, which
// the caller deletes at the end of the run: on ext4 without a journal
// (this VM's) the kernel skips inodes freed in the last minutes when it
// allocates one, one at a time, so deleting them now would slow the
// small-file writes that follow.
func (r *Report) measureBaselines(cfg Config, createDir string) error {
	n := cfg.Size
	if n <= 0 {
		n = 256 << 20
	}
	src := filepath.Join(cfg.TempDir, "baseline-src")
	if err := writeRandomFile(src, n); err != nil {
		return err
	}
	defer os.Remove(src)
	// Each baseline with the shares of CPU time stolen and idle while it
	// ran, as godfs's figures have them.
	add := func(name, unit string, measure func() (float64, error)) error {
		watch := watchCPU()
		v, err := measure()
		if err != nil {
			return err
		}
		stolen, idle := watch.shares()
		r.Baselines = append(r.Baselines, Result{Name: name, Value: v, Unit: unit, StolenPct: stolen, IdlePct: idle})
		return nil
	}
	if err := add("disk: cp+fsync", "MB/s", func() (float64, error) {
		dst := filepath.Join(cfg.TempDir, "baseline-copy")
		defer os.Remove(dst)
		d, err := timeIt(func() error { return copyLocal(src, dst) })
		return mbps(n, d), err
	}); err != nil {
		return fmt.Errorf("disk baseline: %w", err)
	}
	if err := add("network: loopback TCP", "MB/s", func() (float64, error) { return loopbackTCP(n) }); err != nil {
		return fmt.Errorf("network baseline: %w", err)
	}
	if err := add(roundTripBaseline, "ops/s", func() (float64, error) { return roundTrips(cfg.Clients) }); err != nil {
		return fmt.Errorf("round-trip baseline: %w", err)
	}
	if err := add("fsync rate", "ops/s", func() (float64, error) { return fsyncRate(cfg.TempDir) }); err != nil {
		return fmt.Errorf("fsync baseline: %w", err)
	}
	if err := add("file creates", "ops/s", func() (float64, error) { return createRate(createDir) }); err != nil {
		return fmt.Errorf("file create baseline: %w", err)
	}
	return add("CRC32C", "MB/s", func() (float64, error) { return crcSpeed(), nil })
}

// copyLocal is the disk baseline: what cp does, plus the fsync godfs does
// too.
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

// loopbackTCP copies n bytes over one loopback TCP connection.
func loopbackTCP(n int64) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		got <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	start := time.Now()
	for sent := int64(0); sent < n; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, err
		}
	}
	c.Close()
	if err := <-got; err != nil {
		return 0, err
	}
	return mbps(n, time.Since(start)), nil
}

// roundTripBaseline names the round-trip baseline.
const roundTripBaseline = "loopback round trips"

// roundTrips is how many exchanges of a 100-byte request for a 200-byte
// answer `clients` loopback TCP connections make per second, one in
// flight each, over about a second: what a call of one RPC could reach
// on this machine if serving it cost nothing (a getFileInfo is about that
// size).
func roundTrips(clients int) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, resp := make([]byte, 100), make([]byte, 200)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	counts := make(chan int, clients)
	errs := make(chan error, clients)
	start := time.Now()
	for range clients {
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			req, resp := make([]byte, 100), make([]byte, 200)
			n := 0
			for time.Since(start) < time.Second {
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errs <- err
					return
				}
				n++
			}
			counts <- n
		}()
	}
	total := 0
	for range clients {
		select {
		case n := <-counts:
			total += n
		case err := <-errs:
			return 0, err
		}
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// fsyncRate is how many 4 KiB write+fsync rounds the directory takes per
// second, over about a second.
func fsyncRate(dir string) (float64, error) {
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// probeName is the fsync probe's row in a report.
const probeName = "fdatasync alongside, slowest"

// probeEvery is how often the fsync probe syncs: 100 a second, a few
// percent of the op log's syncs in a paced run, so it adds little to the
// disk's load.
const probeEvery = 10 * time.Millisecond

// fsyncProbe times an fdatasync of a 4 KiB overwrite in a local directory
// every probeEvery, the op log's kind of write, while a measurement runs.
// On this VM the disk's flushes slow down when both vCPUs are busy
// (docs/performance.md), so a baseline measured on an idle machine would
// not show what the disk did during the run.
type fsyncProbe struct {
	f    *os.File
	quit chan struct{}
	done chan struct{}
	lat  []time.Duration
	err  error
}

func startFsyncProbe(dir string) (*fsyncProbe, error) {
	f, err := os.CreateTemp(dir, "probe-*")
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	// Written and synced once first, so that the probe's syncs are
	// overwrites, as the op log's are of its preallocated segments.
	if _, err := f.Write(buf); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	p := &fsyncProbe{f: f, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for {
			if _, err := f.WriteAt(buf, 0); err != nil {
				p.err = err
				return
			}
			start := time.Now()
			if err := datasync.File(f); err != nil {
				p.err = err
				return
			}
			p.lat = append(p.lat, time.Since(start))
			select {
			case <-p.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return p, nil
}

// stop ends the probe and reports its syncs (one at least): Value is the
// slowest, in ms.
func (p *fsyncProbe) stop() (Result, error) {
	close(p.quit)
	<-p.done
	p.f.Close()
	os.Remove(p.f.Name())
	if p.err != nil {
		return Result{}, p.err
	}
	res := latencies(p.lat)
	res.Unit = "ms"
	return res, nil
}

// createRate is how many empty files per second one thread creates in the
// empty directory d, over about a second. A small replica is one file, so
// a small file at replication 3 is three creates: on machines where
// creating a file is slow, that bounds small-file writes.
func createRate(d string) (float64, error) {
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		f, err := os.OpenFile(filepath.Join(d, fmt.Sprint(n)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return 0, err
		}
		f.Close()
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// crcSpeed is CRC32C over 64 KiB packets, in MB/s.
func crcSpeed() float64 {
	buf := make([]byte, 64<<10)
	tab := crc32.MakeTable(crc32.Castagnoli)
	start := time.Now()
	var n int64
	for time.Since(start) < 300*time.Millisecond {
		for i := 0; i < 100; i++ {
			crc32.Checksum(buf, tab)
		}
		n += 100 * int64(len(buf))
	}
	return mbps(n, time.Since(start))
}

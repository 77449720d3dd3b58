package master

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol/pb"
)

// newBenchMaster returns a master in a temp dir with 3 fake datanodes
// registered in its block map, and their uuids.
func newBenchMaster(b testing.TB, dir string) (*Master, []string) {
	cfg := DefaultConfig(dir)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var uuids []string
	for i := 0; i < 3; i++ {
		u := fmt.Sprintf("dn%d", i)
		uuids = append(uuids, u)
		m.mu.blocks.register(&datanode{uuid: u,
			info: &pb.DatanodeInfoProto{Id: &pb.DatanodeIDProto{IpAddr: proto.String("127.0.0.1"), XferPort: proto.Uint32(uint32(i + 1))}}})
	}
	return m, uuids
}

// makeFiles creates n one-block files (1000 per directory) through the
// state machine, as a metadata-only generator, with their blocks in the
// block map on the given datanodes. m.mu must be held.
func makeFiles(b testing.TB, m *Master, n int, uuids []string) {
	makeBigFiles(b, m, n, 1, uuids)
}

// makeBigFiles is makeFiles for blocks blocks spread over files of
// perFile blocks each.
func makeBigFiles(b testing.TB, m *Master, blocks, perFile int, uuids []string) {
	n := (blocks + perFile - 1) / perFile
	for d := 0; d <= n/1000; d++ {
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: fmt.Sprintf("/d%d", d), FileID: m.mu.tree.NextInodeID()}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		res, err := m.applyLocked(&namespace.Entry{Type: namespace.OpCreate, Path: fmt.Sprintf("/d%d/f%d", i/1000, i),
			FileID: m.mu.tree.NextInodeID(), Client: "c", Replication: 3, BlockSize: 64 << 20})
		if err != nil {
			b.Fatal(err)
		}
		id := res.Inode.ID()
		var prev *namespace.Block
		for k := 0; k < perFile && blocks > 0; k, blocks = k+1, blocks-1 {
			blk := namespace.Block{ID: m.mu.tree.NextBlockID(), GenStamp: m.mu.tree.NextGenStamp()}
			if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAddBlock, FileID: id, Client: "c", Previous: prev, Block: &blk}); err != nil {
				b.Fatal(err)
			}
			if uuids != nil {
				m.mu.blocks.add(id, blk, uuids)
			}
			blk.Len = 64 << 20
			prev = &blk
		}
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpComplete, FileID: id, Client: "c", Previous: prev}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestart measures how long a master with b.N one-block files
// takes to start: checkpoint load (after a clean shutdown) and, separately,
// replay of the whole op log (after a crash).
// Run: go test -run '^$' -bench Restart -benchtime 200000x ./master
func BenchmarkRestart(b *testing.B) {
	for _, clean := range []bool{true, false} {
		name := "checkpoint"
		if !clean {
			name = "log-replay"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			m, uuids := newBenchMaster(b, dir)
			m.mu.Lock()
			makeFiles(b, m, b.N, uuids)
			last := m.mu.tree.LastIndex()
			m.mu.Unlock()
			if clean {
				m.Close() // writes a checkpoint
			} else {
				m.oplog.Sync(last) // as after kill -9: everything is in the log, no checkpoint
				m.oplog.Close()
			}
			m = nil
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			start := time.Now()
			m2, _ := newBenchMaster(b, dir)
			elapsed := time.Since(start)
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			// The restarted master's heap a file: namespace and block
			// entries, no replicas yet (no datanode has reported).
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "heap-bytes/file")
			if clean {
				b.ReportMetric(float64(dirBytes(dir, "checkpoint"))/float64(b.N), "checkpoint-bytes/file")
			}
			if got := m2.mu.tree.Root().NumChildren(); got != b.N/1000+1 {
				b.Fatalf("restarted with %d directories, want %d", got, b.N/1000+1)
			}
			m2.Close()
			b.ReportMetric(float64(elapsed.Milliseconds()), "ms-to-start")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "files/s")
		})
	}
}

// BenchmarkBlockReport measures full block-report ingestion on the master:
// b.N replicas reported by one datanode in one part (decoded already, as
// packed triples), of one-block files
// and of files of 10,000 blocks, and the longest a client waited for the
// master's lock meanwhile.
// Run: go test -run '^$' -bench BlockReport -benchtime 1000000x ./master
func BenchmarkBlockReport(b *testing.B) {
	for _, perFile := range []int{1, 10000} {
		b.Run(fmt.Sprintf("blocks-per-file-%d", perFile), func(b *testing.B) {
			m, uuids := newBenchMaster(b, b.TempDir())
			defer m.Close()
			m.mu.Lock()
			makeBigFiles(b, m, b.N, perFile, uuids[:2]) // the third node's replicas come from its report
			m.mu.Unlock()
			req := &pb.BlockReportRequestProto{DatanodeUuid: proto.String(uuids[2])}
			m.mu.tree.Files(func(n *namespace.Inode) {
				for _, blk := range n.Blocks() {
					req.Replicas = append(req.Replicas, blk.ID, blk.GenStamp, blk.Len)
				}
			})
			waited := lockWaits(m)
			b.ResetTimer()
			start := time.Now()
			if _, err := m.blockReport(context.Background(), underLease(b, m, req)); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(waited().Microseconds())/1000, "longest-lock-wait-ms")
			if got := m.mu.blocks.nodes[uuids[2]].blocks.Len(); got != b.N {
				b.Fatalf("datanode holds %d replicas after its report, want %d", got, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "replicas/s")
		})
	}
}

// BenchmarkMemoryPerBlock measures the master's heap per one-block file
// (namespace entry, block, block-map entry with 3 replicas), with files
// made directly through the state machine, as a metadata-only generator,
// with and without the bytes of the files' names.
// Run: go test -run '^$' -bench MemoryPerBlock -benchtime 300000x ./master
func BenchmarkMemoryPerBlock(b *testing.B) {
	for _, withMap := range []bool{false, true} {
		name := "namespace-only"
		if withMap {
			name = "with-block-map"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			m, uuids := newBenchMaster(b, dir)
			defer m.Close()
			if !withMap {
				uuids = nil
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			m.mu.Lock()
			makeFiles(b, m, b.N, uuids)
			last := m.mu.tree.LastIndex()
			m.mu.Unlock()
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := float64(after.HeapAlloc-before.HeapAlloc) / float64(b.N)
			var names int
			m.mu.tree.Files(func(n *namespace.Inode) { names += len(n.Name()) })
			b.ReportMetric(heap, "heap-bytes/file")
			// The target counts the master's bytes a file with names
			// excluded: names are the users' data, as long as they are.
			b.ReportMetric(heap-float64(names)/float64(b.N), "without-names-bytes/file")
			m.oplog.Sync(last)
			b.ReportMetric(float64(dirBytes(dir, "log-"))/float64(b.N), "log-bytes/file")
		})
	}
}

// dirBytes sums the sizes of the files in dir whose names start with prefix.
func dirBytes(dir, prefix string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

// BenchmarkMonitorPass measures the replication monitor on a healthy
// namespace of b.N one-block files: its scan of every block after a start
// (in passes of scanPerPass: the whole scan and its longest pass), and a later pass, which looks only at blocks something happened
// to (none here).
// Run: go test -run '^$' -bench MonitorPass -benchtime 1000000x ./master
func BenchmarkMonitorPass(b *testing.B) {
	m, uuids := newBenchMaster(b, b.TempDir())
	defer m.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	makeFiles(b, m, b.N, uuids)
	b.ResetTimer()
	var full, longest time.Duration
	for m.mu.blocks.rescanFrom != 0 {
		start := time.Now()
		m.replicateLocked()
		full += time.Since(start)
		longest = max(longest, time.Since(start))
	}
	start := time.Now()
	m.replicateLocked()
	later := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(full.Microseconds())/1000, "full-scan-ms")
	b.ReportMetric(float64(longest.Microseconds())/1000, "longest-pass-ms")
	b.ReportMetric(float64(later.Microseconds())/1000, "later-pass-ms")
}

// lockWaits takes and lets go of m's lock every 100 µs, as clients would,
// until the returned function is called; that returns the longest wait
// (which includes waiting for a core on a busy machine).
func lockWaits(m *Master) func() time.Duration {
	done, waited := make(chan struct{}), make(chan time.Duration)
	go func() {
		var longest time.Duration
		for {
			select {
			case <-done:
				waited <- longest
				return
			default:
			}
			t := time.Now()
			m.mu.Lock()
			longest = max(longest, time.Since(t))
			m.mu.Unlock()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return func() time.Duration {
		close(done)
		return <-waited
	}
}

// changeWaits starts making a durable change every millisecond, as a
// client would, and returns a func that stops and reports the longest and
// the 99th percentile of their latencies.
func changeWaits(m *Master) func() (longest, p99 time.Duration) {
	done, waited := make(chan struct{}), make(chan []time.Duration)
	go func() {
		var lat []time.Duration
		for i := 0; ; i++ {
			select {
			case <-done:
				waited <- lat
				return
			default:
			}
			t := time.Now()
			err := m.change(func() (bool, error) {
				_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: fmt.Sprintf("/probe/%d", i),
					FileID: m.mu.tree.NextInodeID(), Parents: true})
				return true, err
			})
			if err != nil {
				panic(err)
			}
			lat = append(lat, time.Since(t))
			time.Sleep(time.Millisecond)
		}
	}()
	return func() (time.Duration, time.Duration) {
		close(done)
		lat := <-waited
		if len(lat) == 0 {
			return 0, 0
		}
		slices.Sort(lat)
		return lat[len(lat)-1], lat[len(lat)*99/100]
	}
}

// BenchmarkCheckpoint measures a checkpoint of b.N one-block files, and
// the longest a client waits for the master's lock and for a durable
// change (a mkdir every millisecond) meanwhile: written from
// the live tree under the lock (at a clean shutdown), and in the
// background from a checkpoint of those files and the log of the
// CheckpointEvery entries after it (while serving), then the same changes'
// p99 for 3 s with no checkpoint running.
// Run: go test -run '^$' -bench Checkpoint -benchtime 1000000x ./master
func BenchmarkCheckpoint(b *testing.B) {
	for _, background := range []bool{false, true} {
		name := "live-tree-under-lock"
		if background {
			name = "from-log-in-background"
		}
		b.Run(name, func(b *testing.B) {
			m, uuids := newBenchMaster(b, b.TempDir())
			defer m.Close()
			m.mu.Lock()
			makeFiles(b, m, b.N, uuids)
			if background {
				// From a checkpoint of those files and the log of a
				// checkpoint interval of changes after it, as when serving.
				if err := m.checkpointLocked(); err != nil {
					b.Fatal(err)
				}
				for i := range m.cfg.CheckpointEvery {
					if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: fmt.Sprintf("/more/%d", i),
						FileID: m.mu.tree.NextInodeID(), Parents: true}); err != nil {
						b.Fatal(err)
					}
				}
				// Durable before the clock starts, as a serving master's
				// changes are: else the checkpoint's Roll, under the lock,
				// syncs all of them.
				if err := m.oplog.Sync(m.mu.tree.LastIndex()); err != nil {
					b.Fatal(err)
				}
			}
			m.mu.Unlock()
			waited, changed := lockWaits(m), changeWaits(m)
			b.ResetTimer()
			start := time.Now()
			var want uint64 // the index checkpointed: the probe's changes go on meanwhile
			if background {
				m.mu.Lock()
				want = m.mu.tree.LastIndex()
				m.startCheckpointLocked(m.cfg.Now())
				m.mu.Unlock()
				m.ckpt.Wait()
			} else {
				m.mu.Lock()
				want = m.mu.tree.LastIndex()
				err := m.checkpointLocked()
				m.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(waited().Microseconds())/1000, "longest-lock-wait-ms")
			longest, p99 := changed()
			b.ReportMetric(float64(longest.Microseconds())/1000, "longest-change-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-change-ms")
			if m.mu.checkpoint != want {
				b.Fatalf("checkpoint at %d, want %d", m.mu.checkpoint, want)
			}
			b.ReportMetric(float64(elapsed.Milliseconds()), "ms")
			if background {
				b.ReportMetric(float64(m.mu.checkpointWork.Milliseconds()), "work-ms")
				// The same changes with no checkpoint running, for scale.
				changed = changeWaits(m)
				time.Sleep(3 * time.Second)
				_, p99 = changed()
				b.ReportMetric(float64(p99.Microseconds())/1000, "p99-change-without-ms")
			}
		})
	}
}

// BenchmarkContentSummary measures a content summary of b.N one-block
// files (du /) and the longest a client waits for the master's lock
// meanwhile.
// Run: go test -run '^$' -bench ContentSummary -benchtime 2000000x ./master
func BenchmarkContentSummary(b *testing.B) {
	m, uuids := newBenchMaster(b, b.TempDir())
	defer m.Close()
	m.mu.Lock()
	makeFiles(b, m, b.N, uuids)
	m.mu.Unlock()
	waited := lockWaits(m)
	b.ResetTimer()
	resp, err := m.getContentSummary(context.Background(), &pb.GetContentSummaryRequestProto{Path: proto.String("/")})
	b.StopTimer()
	if err != nil || resp.GetSummary().GetFileCount() != uint64(b.N) {
		b.Fatalf("summary: %v %v, want %d files", resp, err, b.N)
	}
	b.ReportMetric(float64(waited().Microseconds())/1000, "longest-lock-wait-ms")
}

// BenchmarkDatanodeDeath measures how long the master's lock is held when
// a datanode holding b.N replicas is declared dead (or re-registers): all
// its replicas dropped, all its blocks made suspects.
// Run: go test -run '^$' -bench DatanodeDeath -benchtime 1000000x ./master
func BenchmarkDatanodeDeath(b *testing.B) {
	m, uuids := newBenchMaster(b, b.TempDir())
	defer m.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	makeFiles(b, m, b.N, uuids)
	m.mu.blocks.rescanFrom = 0 // the scan after a start is over
	b.ResetTimer()
	start := time.Now()
	m.mu.blocks.nodeDead(m.mu.blocks.nodes[uuids[0]])
	elapsed := time.Since(start)
	b.StopTimer()
	if got := m.mu.blocks.suspects.Len(); got != b.N {
		b.Fatalf("%d suspects after the death of a node holding %d replicas", got, b.N)
	}
	b.ReportMetric(float64(elapsed.Microseconds())/1000, "ms-of-lock")
}

// BenchmarkBlockReportDecode measures decoding a full block report of b.N
// replicas as the master receives it: packed (id, stamp, length) triples,
// as godfs datanodes send them, and one BlockProto message a replica, as
// they did before.
// Run: go test -run '^$' -bench BlockReportDecode -benchtime 1000000x ./master
func BenchmarkBlockReportDecode(b *testing.B) {
	for _, packed := range []bool{true, false} {
		name := "packed"
		if !packed {
			name = "messages"
		}
		b.Run(name, func(b *testing.B) {
			req := &pb.BlockReportRequestProto{DatanodeUuid: proto.String("dn")}
			for i := range uint64(b.N) {
				id, gs, n := namespace.FirstBlockID+i, namespace.FirstGenStamp+i, uint64(64<<20)
				if packed {
					req.Replicas = append(req.Replicas, id, gs, n)
				} else {
					req.Blocks = append(req.Blocks, blockProto(id, gs, n))
				}
			}
			wire, err := proto.Marshal(req)
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			got := &pb.BlockReportRequestProto{}
			if err := proto.Unmarshal(wire, got); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			if len(got.GetReplicas())/3+len(got.GetBlocks()) != b.N {
				b.Fatalf("decoded %d replicas, want %d", len(got.GetReplicas())/3+len(got.GetBlocks()), b.N)
			}
			b.ReportMetric(float64(len(wire))/float64(b.N), "wire-bytes/replica")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N), "decoded-bytes/replica")
		})
	}
}

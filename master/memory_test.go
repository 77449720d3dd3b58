package master

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/protocol/pb"
)

// BenchmarkMemoryPerBlock measures the master's heap per one-block file
// (namespace entry, block, block-map entry with 3 replicas), with files
// made directly through the state machine, as a metadata-only generator.
// Run: go test -run '^$' -bench MemoryPerBlock -benchtime 300000x ./master
func BenchmarkMemoryPerBlock(b *testing.B) {
	cfg := DefaultConfig(b.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var uuids []string
	for i := 0; i < 3; i++ {
		u := fmt.Sprintf("dn%d", i)
		uuids = append(uuids, u)
		m.mu.blocks.nodes[u] = &datanode{uuid: u, blocks: map[uint64]struct{}{},
			info: &pb.DatanodeInfoProto{Id: &pb.DatanodeIDProto{IpAddr: proto.String("127.0.0.1"), XferPort: proto.Uint32(uint32(i + 1))}}}
	}
	dirs := b.N/1000 + 1
	m.mu.Lock()
	for d := 0; d < dirs; d++ {
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: fmt.Sprintf("/d%d", d), FileID: m.mu.tree.NextInodeID()}); err != nil {
			b.Fatal(err)
		}
	}
	m.mu.Unlock()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	m.mu.Lock()
	for i := 0; i < b.N; i++ {
		res, err := m.applyLocked(&namespace.Entry{Type: namespace.OpCreate, Path: fmt.Sprintf("/d%d/f%d", i/1000, i),
			FileID: m.mu.tree.NextInodeID(), Client: "c", Replication: 3, BlockSize: 64 << 20})
		if err != nil {
			b.Fatal(err)
		}
		id := res.Inode.ID
		blk := namespace.Block{ID: m.mu.tree.NextBlockID(), GenStamp: m.mu.tree.NextGenStamp()}
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAddBlock, FileID: id, Client: "c", Block: &blk}); err != nil {
			b.Fatal(err)
		}
		m.mu.blocks.add(id, blk, uuids)
		blk.Len = 64 << 20
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpComplete, FileID: id, Client: "c", Previous: &blk}); err != nil {
			b.Fatal(err)
		}
	}
	m.mu.Unlock()
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "heap-bytes/file")
}

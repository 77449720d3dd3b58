package datanode

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkStoreOpen measures how long a datanode holding b.N finalized
// replicas takes to index them at start (the rest of its start-up is a
// registration and one block report). The replicas are made directly in
// the on-disk layout, 1 KiB each.
// Run: go test -run '^$' -bench StoreOpen -benchtime 1000000x ./datanode
func BenchmarkStoreOpen(b *testing.B) {
	dir := b.TempDir()
	s, err := openStore([]string{dir})
	if err != nil {
		b.Fatal(err)
	}
	v := s.vols[0]
	data := make([]byte, 1024)
	meta := make([]byte, metaHeaderSize+4*2)
	for i := range b.N {
		id := uint64(1<<30 + i)
		d := v.finalizedDir(id)
		if i < 1<<13 { // the first ids touch every subdirectory
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(d, blockFileName(id)), data, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, metaFileName(id, 1001)), meta, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	s2, err := openStore([]string{dir})
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if _, n := s2.usage(); n != b.N {
		b.Fatalf("indexed %d replicas, want %d", n, b.N)
	}
	b.ReportMetric(float64(elapsed.Milliseconds()), "ms-to-open")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "replicas/s")
}

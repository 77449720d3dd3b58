package datanode

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// BenchmarkStoreOpen measures how long a datanode holding b.N finalized
// replicas takes to index them at start (the rest of its start-up is a
// registration and one block report). The replicas are made directly in
// the on-disk layout, 1 KiB each: in HDFS's (two files a replica, as
// datanodes before the one-file layout wrote), in the one-file one and
// as records in packs (4 KiB each: a start reads the packs whole).
// Run: go test -run '^$' -bench StoreOpen -benchtime 1000000x ./datanode
func BenchmarkStoreOpen(b *testing.B) {
	b.Run("Packed4KiB", benchPackedOpen)
	data := make([]byte, 1024)
	meta := make([]byte, metaHeaderSize+4*2)
	b.Run("HDFSLayout", func(b *testing.B) {
		benchStoreOpen(b, func(d string, id uint64) error {
			if err := os.WriteFile(filepath.Join(d, blockFileName(id)), data, 0o644); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, metaFileName(id, 1001)), meta, 0o644)
		})
	})
	b.Run("OneFile", func(b *testing.B) {
		one := make([]byte, inlineSize(int64(len(data))))
		benchStoreOpen(b, func(d string, id uint64) error {
			return os.WriteFile(filepath.Join(d, inlineFileName(id, 1001)), one, 0o644)
		})
	})
}

func benchPackedOpen(b *testing.B) {
	dir := b.TempDir()
	packs := filepath.Join(dir, "current", "packs")
	if err := os.MkdirAll(packs, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 4096)
	sums := xfer.ChunkSums(xfer.CRC32C, nil, data)
	rec := make([]byte, recordHeaderSize, recordSize(int64(len(data))))
	rec = append(append(rec, sums...), data...)
	var f *os.File
	var w *bufio.Writer
	off := int64(packSize)
	for i := range b.N {
		if off+int64(len(rec)) > packSize {
			if f != nil {
				w.Flush()
				f.Close()
			}
			var err error
			if f, err = os.Create(filepath.Join(packs, packName(uint64(i)))); err != nil {
				b.Fatal(err)
			}
			w, off = bufio.NewWriterSize(f, 1<<20), 0
		}
		recordHeader(rec, uint64(1<<30+i), 1001, int64(len(data)), pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		w.Write(rec)
		off += int64(len(rec))
	}
	w.Flush()
	f.Close()
	b.ResetTimer()
	start := time.Now()
	s, err := testStore(b, dir)
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if _, n := s.usage(); n != b.N {
		b.Fatalf("indexed %d replicas, want %d", n, b.N)
	}
	b.ReportMetric(float64(elapsed.Milliseconds()), "ms-to-open")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "replicas/s")
}

func benchStoreOpen(b *testing.B, put func(dir string, id uint64) error) {
	dir := b.TempDir()
	s, err := testStore(b, dir)
	if err != nil {
		b.Fatal(err)
	}
	v := s.vols[0]
	for i := range b.N {
		id := uint64(1<<30 + i)
		d := v.finalizedDir(id)
		if i < 1<<13 { // the first ids touch every subdirectory
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := put(d, id); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	s2, err := testStore(b, dir)
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

// BenchmarkReplicasAtOnce is what the disk allows a put at replication 3
// on one machine: three stores (three datanodes' data directories on the
// same disk) each write b.N bytes of 64 MiB replicas at once, through the
// store's own replica writer (64 KiB packets, the write-back and fsyncs
// it does, finalizing each replica), with no network and no checksum
// computing. Compare its MB/s a stream with the disk baseline of `godfs
// bench` (cp + fsync) and with a put at replication 3.
// Run: go test -run '^$' -bench ReplicasAtOnce -benchtime 1073741824x ./datanode
func BenchmarkReplicasAtOnce(b *testing.B) {
	const (
		streams = 3
		block   = 64 << 20
		packet  = 64 << 10
	)
	data := make([]byte, packet)
	sums := make([]byte, packet/protocol.BytesPerChecksum*protocol.ChecksumSize)
	var stores []*store
	for i := range streams {
		s, err := testStore(b, filepath.Join(b.TempDir(), fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		stores = append(stores, s)
	}
	b.SetBytes(1) // b.N is the bytes each stream writes
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uint64(1 << 30)
			for left := b.N; left > 0; id++ {
				w, err := s.create(id, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
				if err != nil {
					errs <- err
					return
				}
				for n := 0; n < block && left > 0; n, left = n+packet, left-packet {
					if err := w.write(data, sums); err != nil {
						errs <- err
						return
					}
				}
				if err := w.finish(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

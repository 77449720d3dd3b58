//go:build linux

package datanode

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// readOverTCP reads [off, off+n) of block id from d as a client does and
// returns the data of the packets, from the chunk boundary at or before off.
func readOverTCP(t *testing.T, d *DataNode, id uint64, off, n int64) []byte {
	t.Helper()
	c, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := readOn(t, c, id, off, n)
	xfer.WriteDelimited(c, &pb.ClientReadStatusProto{Status: pb.Status_CHECKSUM_OK.Enum()})
	return got
}

// readOn reads as readOverTCP does, on c, and sends no status after.
func readOn(t *testing.T, c net.Conn, id uint64, off, n int64) []byte {
	t.Helper()
	b := &pb.ExtendedBlockProto{PoolId: proto.String("BP-test"), BlockId: proto.Uint64(id), GenerationStamp: proto.Uint64(1001)}
	req := &pb.OpReadBlockProto{Header: &pb.ClientOperationHeaderProto{BaseHeader: &pb.BaseHeaderProto{Block: b}, ClientName: proto.String("test")},
		Offset: proto.Uint64(uint64(off)), Len: proto.Uint64(uint64(n)), SendChecksums: proto.Bool(true)}
	if err := xfer.WriteOp(c, xfer.OpReadBlock, req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(r, resp); err != nil || resp.GetStatus() != pb.Status_SUCCESS {
		t.Fatalf("read block %d at %d: %v %v", id, off, resp, err)
	}
	var got []byte
	chunk := int64(resp.GetReadOpChecksumInfo().GetChunkOffset()) / protocol.BytesPerChecksum
	for {
		pk, _, err := xfer.ReadCheckedPacket(r, nil, xfer.CRC32C, chunk)
		if err != nil {
			t.Fatalf("packet after %d bytes: %v", len(got), err)
		}
		if pk.Last {
			break
		}
		if len(pk.Data) > 64<<10 || pk.Offset != int64(resp.GetReadOpChecksumInfo().GetChunkOffset())+int64(len(got)) {
			t.Fatalf("packet of %d bytes at %d after %d bytes", len(pk.Data), pk.Offset, len(got))
		}
		got = append(got, pk.Data...)
		chunk += xfer.NumChunks(int64(len(pk.Data)))
	}
	return got
}

// A client's report of a checksum error after a read names the block in
// the datanode's log, the status coming right away (HDFS's clients) or
// with the connection's next operation (godfs's).
func TestChecksumErrorReportNamesTheBlock(t *testing.T) {
	var log lockedBuffer
	d := serveDatanodeLogging(t, &log)
	writeReplica(t, d.store, 7, make([]byte, 1000))
	writeReplica(t, d.store, 8, make([]byte, 1000))
	c, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readOn(t, c, 7, 0, 1000)
	bad := &pb.ClientReadStatusProto{Status: pb.Status_ERROR_CHECKSUM.Enum()}
	xfer.WriteDelimited(c, bad)
	readOn(t, c, 8, 0, 1000) // the connection carries on after the report
	xfer.WriteDelimited(c, bad)
	for range 1000 {
		if strings.Contains(log.String(), "block=7") && strings.Contains(log.String(), "block=8") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{`msg="client reports checksum error" block=7`, `msg="client reports checksum error" block=8`} {
		if !strings.Contains(log.String(), want) {
			t.Fatalf("datanode's log:\n%s\nwant %s", log.String(), want)
		}
	}
}

// lockedBuffer is a log's destination that the test reads while the
// datanode writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A finalized replica reads back the same over TCP whether its data comes
// from the disk (pread) or from the page cache (mapped), in whole and in
// ranges that start off a page boundary and span several batches.
func TestReadBlockFromDiskAndCache(t *testing.T) {
	d := serveDatanode(t)
	data := make([]byte, 3*readBatch+1000)
	rand.Read(data)
	writeReplica(t, d.store, 7, data)
	file := filepath.Join(d.store.vols[0].finalizedDir(7), blockFileName(7))
	evict := func() {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Sync()
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	cases := []struct{ off, n int64 }{{0, int64(len(data))}, {5000, 2 * readBatch}, {readBatch - 1, 10}, {int64(len(data)) - 1, 1}, {100, 0}}
	for _, from := range []string{"disk", "cache"} {
		for _, tc := range cases {
			if from == "disk" {
				evict()
			}
			got := readOverTCP(t, d, 7, tc.off, tc.n)
			start := tc.off - tc.off%protocol.BytesPerChecksum
			want := data[start:min(int64(len(data)), (tc.off+tc.n+protocol.BytesPerChecksum-1)/protocol.BytesPerChecksum*protocol.BytesPerChecksum)]
			if !bytes.Equal(got, want) {
				t.Fatalf("from %s, %d bytes at %d: got %d bytes, want %d (equal prefix: %v)", from, tc.n, tc.off, len(got), len(want),
					bytes.HasPrefix(want, got))
			}
		}
	}
	// The reads from the cache were mapped.
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, m, ok := mapCached(f, 5000, readBatch)
	if !ok {
		t.Fatal("the replica just read is not all in the page cache: its reads were not mapped")
	}
	unmapData(m)
}

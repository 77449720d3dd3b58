package datanode

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// When the next datanode of a pipeline dies after the set-up, a
// datanode that fails to forward a packet to it must say so in its ack
// (itself SUCCESS, the next ERROR): the writer then drops the dead node.
// Closing its connection instead made the writer drop the live one and
// keep the dead one in the recovered pipeline.
func TestPipelineBlamesTheDeadDownstream(t *testing.T) {
	d := serveDatanode(t)

	// The next datanode: answers the set-up, then dies (its connection
	// reset), as a killed process's would be.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	died := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r := bufio.NewReader(c)
		if _, err := xfer.ReadOpHeader(r); err == nil {
			xfer.ReadDelimited(r, &pb.OpWriteBlockProto{})
			xfer.WriteDelimited(c, &pb.BlockOpResponseProto{Status: pb.Status_SUCCESS.Enum(), FirstBadLink: proto.String("")})
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		close(died)
	}()

	b := &pb.ExtendedBlockProto{PoolId: proto.String("BP-test"), BlockId: proto.Uint64(1 << 30), GenerationStamp: proto.Uint64(1001), NumBytes: proto.Uint64(0)}
	op := xfer.WriteBlockOp(b, &pb.TokenProto{Identifier: []byte{}, Password: []byte{}, Kind: proto.String(""), Service: proto.String("")},
		"test-client", []*pb.DatanodeInfoProto{testNode(d.Addr()), testNode(ln.Addr().String())}, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	p, err := xfer.OpenPipeline(nil, d.Addr(), op, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abort()
	<-died
	time.Sleep(50 * time.Millisecond) // the reset reaches the datanode
	data := make([]byte, protocol.MaxPacketData)
	var perr *xfer.PipelineError
	for i := 0; i < 8 && perr == nil; i++ {
		err := p.Write(data, xfer.ChunkSums(xfer.CRC32C, nil, data))
		if err == nil {
			err = p.Drain()
		}
		if err != nil && !errors.As(err, &perr) {
			t.Fatalf("write: %v", err)
		}
	}
	if perr == nil || perr.Bad != 1 {
		t.Fatalf("pipeline error %v: want the second datanode (index 1), the dead one, blamed", perr)
	}
}

// A packet whose data does not match its checksums is refused with
// ERROR_CHECKSUM, past the first MiB (written through the stage) as at
// the start, and the replica keeps only what came before it.
func TestCorruptPacketRefused(t *testing.T) {
	for _, good := range []int{0, 2} { // packets of 1 MiB before the bad one
		d := serveDatanode(t)
		id := uint64(1<<30 + good)
		b := &pb.ExtendedBlockProto{PoolId: proto.String("BP-test"), BlockId: proto.Uint64(id), GenerationStamp: proto.Uint64(1001), NumBytes: proto.Uint64(0)}
		op := xfer.WriteBlockOp(b, nil, "test-client", []*pb.DatanodeInfoProto{testNode(d.Addr())}, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		p, err := xfer.OpenPipeline(nil, d.Addr(), op, 8)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, protocol.MaxPacketData)
		var want []byte
		for i := range good {
			for j := range data {
				data[j] = byte(i*7 + j)
			}
			want = append(want, data...)
			if err := p.Write(data, xfer.ChunkSums(xfer.CRC32C, nil, data)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Drain(); err != nil {
			t.Fatal(err)
		}
		sums := xfer.ChunkSums(xfer.CRC32C, nil, data)
		data[len(data)/2] ^= 1 // in the packet's second half, past its first checked piece
		err = p.Write(data, sums)
		if err == nil {
			err = p.Drain()
		}
		var perr *xfer.PipelineError
		if !errors.As(err, &perr) || perr.Bad != 0 || !strings.Contains(err.Error(), "ERROR_CHECKSUM") {
			t.Fatalf("%d good packets, then a corrupt one: %v, want ERROR_CHECKSUM from the datanode", good, err)
		}
		p.Abort()
		// The datanode finalizes what it had (or drops an empty replica)
		// once it sees the pipeline go.
		var rr *replicaReader
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			d.store.mu.Lock()
			writing := d.store.mu.writing[id] != nil
			d.store.mu.Unlock()
			if !writing || time.Now().After(deadline) {
				break
			}
		}
		rr, err = d.store.open(id)
		if len(want) == 0 {
			if !errors.Is(err, ErrReplicaNotFound) {
				t.Fatalf("after a first packet that was corrupt: %v, want no replica", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("replica after %d good packets: %v", good, err)
		}
		var got []byte
		err = rr.eachPacket(func(_ int64, data, _ []byte) error { got = append(got, data...); return nil })
		rr.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("replica holds %d bytes (%v), want the %d of the good packets", len(got), err, len(want))
		}
	}
}

// TestPipelinesReuseConnections writes block after block down a pipeline
// of two datanodes (every other one with its data in the last packet): each goes over the connections the one before left
// (the writer's to the first datanode, the first's to the second), and a
// kept connection that broke meanwhile is replaced without failing the
// block.
func TestPipelinesReuseConnections(t *testing.T) {
	nodes := []*DataNode{serveDatanode(t), serveDatanode(t)}
	var peers xfer.Peers
	defer peers.Close()
	data := make([]byte, 3000)
	write := func(id uint64) {
		t.Helper()
		b := &pb.ExtendedBlockProto{PoolId: proto.String("BP-test"), BlockId: proto.Uint64(id), GenerationStamp: proto.Uint64(1001), NumBytes: proto.Uint64(0)}
		op := xfer.WriteBlockOp(b, nil, "test-client", []*pb.DatanodeInfoProto{testNode(nodes[0].Addr()), testNode(nodes[1].Addr())},
			pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		p, err := xfer.OpenPipeline(&peers, nodes[0].Addr(), op, 8)
		if err != nil {
			t.Fatal(err)
		}
		data[0] = byte(id)
		if id%2 == 0 { // the data in the last packet itself, none empty after it
			sp := xfer.NewSpace()
			d := append(sp.Data()[:0], data...)
			err = p.SendLast(sp, d, xfer.ChunkSums(xfer.CRC32C, sp.Sums(), d))
		} else {
			err = p.Write(data, xfer.ChunkSums(xfer.CRC32C, nil, data))
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Finish(); err != nil {
			t.Fatal(err)
		}
		for _, d := range nodes {
			rr, err := d.store.open(id)
			if err != nil {
				t.Fatalf("block %d: %v", id, err)
			}
			got := make([]byte, len(data))
			rr.readChunks(0, got, make([]byte, xfer.NumChunks(int64(len(data)))*protocol.ChecksumSize))
			rr.Close()
			if got[0] != byte(id) || rr.length != int64(len(data)) {
				t.Fatalf("block %d on %s: %d bytes, first %d", id, d.Addr(), rr.length, got[0])
			}
		}
	}
	// The first datanode keeps its connection just after it acks.
	waitKept := func() {
		for deadline := time.Now().Add(time.Second); nodes[0].peers.Idle() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	open := func(d *DataNode) int {
		d.connsMu.Lock()
		defer d.connsMu.Unlock()
		return len(d.conns)
	}
	for id := uint64(1); id <= 10; id++ {
		write(id)
		waitKept()
		if peers.Idle() != 1 || nodes[0].peers.Idle() != 1 || open(nodes[0]) != 1 || open(nodes[1]) != 1 {
			t.Fatalf("after block %d: %d and %d connections kept, %d and %d served, want 1 of each (reused)",
				id, peers.Idle(), nodes[0].peers.Idle(), open(nodes[0]), open(nodes[1]))
		}
	}
	breakKept := func(p *xfer.Peers, addr string) {
		c, _ := p.Get(addr)
		c.Close()
		p.Put(addr, c)
	}
	breakKept(&peers, nodes[0].Addr())
	breakKept(&nodes[0].peers, nodes[1].Addr())
	write(11)
	waitKept()
	if peers.Idle() != 1 || nodes[0].peers.Idle() != 1 {
		t.Fatalf("after replacing broken connections: %d and %d kept, want 1 and 1", peers.Idle(), nodes[0].peers.Idle())
	}
}

func testNode(addr string) *pb.DatanodeInfoProto {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.ParseUint(port, 10, 16)
	return &pb.DatanodeInfoProto{Id: &pb.DatanodeIDProto{IpAddr: proto.String(host), HostName: proto.String(host),
		DatanodeUuid: proto.String(addr), XferPort: proto.Uint32(uint32(p)), InfoPort: proto.Uint32(0), IpcPort: proto.Uint32(0)}}
}

// serveDatanode starts a datanode whose master is unreachable (it serves
// data transfers all the same), closed at the end of the test.
func serveDatanode(t *testing.T) *DataNode {
	t.Helper()
	return serveDatanodeLogging(t, io.Discard)
}

// serveDatanodeLogging is serveDatanode with the datanode's log to log.
func serveDatanodeLogging(t *testing.T, log io.Writer) *DataNode {
	t.Helper()
	d, err := New(Options{DataDirs: []string{t.TempDir()}, Listen: "127.0.0.1:0", Master: "127.0.0.1:1",
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Listen(); err != nil {
		t.Fatal(err)
	}
	go d.Serve()
	t.Cleanup(func() { d.Close() })
	return d
}

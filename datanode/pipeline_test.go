package datanode

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
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
	d, err := New(Options{DataDirs: []string{t.TempDir()}, Listen: "127.0.0.1:0", Master: "127.0.0.1:1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Listen(); err != nil {
		t.Fatal(err)
	}
	go d.Serve()
	defer d.Close()

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

	node := func(addr string) *pb.DatanodeInfoProto {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.ParseUint(port, 10, 16)
		return &pb.DatanodeInfoProto{Id: &pb.DatanodeIDProto{IpAddr: proto.String(host), HostName: proto.String(host),
			DatanodeUuid: proto.String(addr), XferPort: proto.Uint32(uint32(p)), InfoPort: proto.Uint32(0), IpcPort: proto.Uint32(0)}}
	}
	b := &pb.ExtendedBlockProto{PoolId: proto.String("BP-test"), BlockId: proto.Uint64(1 << 30), GenerationStamp: proto.Uint64(1001), NumBytes: proto.Uint64(0)}
	op := xfer.WriteBlockOp(b, &pb.TokenProto{Identifier: []byte{}, Password: []byte{}, Kind: proto.String(""), Service: proto.String("")},
		"test-client", []*pb.DatanodeInfoProto{node(d.Addr()), node(ln.Addr().String())}, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	p, err := xfer.OpenPipeline(d.Addr(), op, 8)
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

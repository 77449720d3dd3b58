package master

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

// Placement counts the room of replicas placed and not yet received as
// taken, so that writers starting before the next heartbeat do not fill a
// node past what it has; a received replica gives it back, and room held
// by a pipeline that never delivered is forgotten after two heartbeats.
func TestPlacementCountsReplicasNotYetReceived(t *testing.T) {
	m, dns := testMaster(t, 3)
	const block = 1 << 20
	room := func(free uint64) {
		for _, dn := range dns {
			m.sendHeartbeat(context.Background(), &pb.HeartbeatRequestProto{DatanodeUuid: proto.String(dn.uuid), Remaining: proto.Uint64(free)})
		}
	}
	room(2*block + block/2) // two blocks' room on each node
	ctx := context.Background()
	addBlock := func(name string) (*pb.LocatedBlockProto, error) {
		t.Helper()
		if _, err := m.create(ctx, &pb.CreateRequestProto{Src: proto.String(name), Masked: &pb.FsPermissionProto{Perm: proto.Uint32(0o644)},
			ClientName: proto.String("c"), CreateFlag: proto.Uint32(uint32(pb.CreateFlagProto_CREATE)), CreateParent: proto.Bool(true),
			Replication: proto.Uint32(3), BlockSize: proto.Uint64(block)}); err != nil {
			t.Fatal(err)
		}
		resp, err := m.addBlock(ctx, &pb.AddBlockRequestProto{Src: proto.String(name), ClientName: proto.String("c")})
		return resp.GetBlock(), err
	}
	first, err := addBlock("/f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := addBlock("/g"); err != nil {
		t.Fatal(err)
	}
	if _, err := addBlock("/h"); !errors.Is(err, protocol.ErrNoDatanodes) {
		t.Fatalf("a third block on nodes with room for two: %v, want ErrNoDatanodes", err)
	}
	// The first block's replicas arrive: their room is the nodes' own
	// report's to count from now on.
	for _, dn := range dns {
		m.blockReceivedAndDeleted(ctx, &pb.BlockReceivedAndDeletedRequestProto{DatanodeUuid: proto.String(dn.uuid),
			Received: []*pb.BlockProto{{BlockId: first.GetB().BlockId, GenStamp: first.GetB().GenerationStamp, NumBytes: proto.Uint64(block)}}})
	}
	if _, err := addBlock("/i"); err != nil {
		t.Fatalf("after a replica was received: %v", err)
	}
	// /g's and /i's pipelines never deliver: two heartbeats later their
	// room is free again.
	room(2*block + block/2)
	if _, err := addBlock("/j"); !errors.Is(err, protocol.ErrNoDatanodes) {
		t.Fatalf("one heartbeat after: %v, want ErrNoDatanodes", err)
	}
	room(2*block + block/2)
	if _, err := addBlock("/k"); err != nil {
		t.Fatalf("two heartbeats after: %v", err)
	}
}

package datanode

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// transferBlock copies a local replica to the targets the master named,
// as a write pipeline: the first target forwards to the rest. Chunks are
// verified as they are read, so a corrupt replica is never copied: it is
// quarantined and reported instead.
func (d *DataNode) transferBlock(cmd *pb.BlockTransferCommandProto) error {
	id := cmd.GetBlock().GetBlockId()
	targets := cmd.GetTargets()
	if len(targets) == 0 {
		return fmt.Errorf("transfer of block %d: no targets", id)
	}
	rr, err := d.store.open(id)
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	defer rr.Close()
	if want := cmd.GetBlock().GetGenStamp(); want != 0 && rr.gs != want {
		return fmt.Errorf("transfer of block %d: replica has generation stamp %d, not %d", id, rr.gs, want)
	}
	b := &pb.ExtendedBlockProto{PoolId: proto.String(d.poolID()), BlockId: proto.Uint64(id),
		GenerationStamp: proto.Uint64(rr.gs), NumBytes: proto.Uint64(uint64(rr.length))}
	op := xfer.WriteBlockOp(b, nil, "", targets, xfer.ChecksumType(rr.tab))
	op.Source = &pb.DatanodeInfoProto{Id: d.datanodeID()}
	p, err := xfer.OpenPipeline(&d.peers, xfer.Addr(targets[0].GetId()), op, ackQueue)
	if err != nil {
		return fmt.Errorf("transfer of block %d: %w", id, err)
	}
	start := time.Now()
	err = rr.eachPacket(func(off int64, data, sums []byte) error {
		if err := p.Write(data, sums); err != nil {
			return err
		}
		d.throttle(start, off+int64(len(data)))
		return nil
	})
	if err != nil {
		p.Abort()
		if errors.Is(err, protocol.ErrCorruption) {
			d.quarantine(id, rr.gs, err)
		}
		return fmt.Errorf("transfer of block %d: %w", id, err)
	}
	if err := p.Finish(); err != nil {
		return fmt.Errorf("transfer of block %d: %w", id, err)
	}
	d.log.Info("block copied", "block", id, "bytes", rr.length, "to", len(targets), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// throttle sleeps so that copies stay under the configured bandwidth.
func (d *DataNode) throttle(start time.Time, sent int64) {
	if d.opts.TransferRate <= 0 {
		return
	}
	want := time.Duration(float64(sent) / float64(d.opts.TransferRate) * float64(time.Second))
	if ahead := want - time.Since(start); ahead > 0 {
		time.Sleep(ahead)
	}
}

// runTransfers executes copy commands, a bounded number at a time.
func (d *DataNode) runTransfers(cmds []*pb.BlockTransferCommandProto) {
	for _, cmd := range cmds {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			select {
			case d.transferSlots <- struct{}{}:
			case <-d.stop:
				return
			}
			defer func() { <-d.transferSlots }()
			d.xceivers.Add(1) // heartbeats report copies in flight too
			defer d.xceivers.Add(-1)
			if err := d.transferBlock(cmd); err != nil && !errors.Is(err, ErrReplicaNotFound) {
				d.log.Warn("block copy failed", "err", err)
			}
		}()
	}
}

// runRecoveries cuts replicas to the length the master agreed on at lease
// recovery and moves them to the new generation stamp.
func (d *DataNode) runRecoveries(cmds []*pb.BlockRecoveryCommandProto) {
	for _, cmd := range cmds {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			b := cmd.GetBlock()
			rw, err := d.reopenForRecovery(b.GetBlockId(), b.GetGenStamp(), cmd.GetNewGenStamp(), int64(b.GetNumBytes()))
			if err == nil {
				err = rw.finish()
			}
			if err != nil {
				d.log.Warn("block recovery failed", "block", b.GetBlockId(), "err", err)
				return
			}
			d.log.Info("block recovered", "block", b.GetBlockId(), "length", b.GetNumBytes(), "genStamp", cmd.GetNewGenStamp())
			d.queueIBR(&pb.BlockProto{BlockId: b.BlockId, GenStamp: proto.Uint64(cmd.GetNewGenStamp()), NumBytes: b.NumBytes}, nil)
		}()
	}
}

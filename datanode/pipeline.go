package datanode

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// heartbeatSeqno marks the keep-alive packets writers send when idle.
const heartbeatSeqno = -1

// toAck is a packet written locally and waiting for its ack.
type toAck struct {
	seqno  int64
	last   bool
	status pb.Status // this datanode's status for the packet
	// downFailed: forwarding the packet to the next datanode failed, which
	// the ack must say (this node SUCCESS, the next ERROR), or the writer
	// would blame this node for the one after it.
	downFailed bool
}

// writeBlock receives a replica in a pipeline: it connects to the next
// target (if any), then for each packet forwards it downstream, verifies
// its checksums, writes it, and hands it to the responder, which acks
// upstream once the downstream ack for the same packet arrives. At most
// ackQueue packets are in flight, which bounds memory per transfer.
func (d *DataNode) writeBlock(req *pb.OpWriteBlockProto, up net.Conn, upR *bufio.Reader) error {
	b := req.GetHeader().GetBaseHeader().GetBlock()
	id, gs := b.GetBlockId(), b.GetGenerationStamp()
	stage := req.GetStage()
	recovery := stage == pb.OpWriteBlockProto_PIPELINE_SETUP_STREAMING_RECOVERY || stage == pb.OpWriteBlockProto_PIPELINE_CLOSE_RECOVERY
	if stage != pb.OpWriteBlockProto_PIPELINE_SETUP_CREATE && !recovery {
		msg := fmt.Sprintf("write stage %s is not supported yet (appends start a new block)", stage)
		respond(up, pb.Status_ERROR_UNSUPPORTED, msg)
		return fmt.Errorf("block %d: %s", id, msg)
	}
	cs := req.GetRequestedChecksum()
	tab, err := xfer.ChecksumTable(cs.GetType())
	if err != nil || cs.GetBytesPerChecksum() != protocol.BytesPerChecksum {
		msg := fmt.Sprintf("checksum %s per %d bytes is not supported; use CRC32C or CRC32 per %d bytes",
			cs.GetType(), cs.GetBytesPerChecksum(), protocol.BytesPerChecksum)
		respond(up, pb.Status_ERROR_UNSUPPORTED, msg)
		return fmt.Errorf("block %d: %s", id, msg)
	}

	// Downstream first, so a bad link is reported before any data flows.
	var down net.Conn
	var downR *bufio.Reader
	clean := false // the whole block went down the pipeline and was acked
	if targets := req.GetTargets(); len(targets) > 0 {
		addr := xfer.Addr(targets[0].GetId())
		var err error
		down, downR, err = d.connectDownstream(addr, req)
		if err != nil {
			xfer.WriteDelimited(up, &pb.BlockOpResponseProto{Status: pb.Status_ERROR.Enum(),
				FirstBadLink: proto.String(firstBadLink(err, addr)), Message: proto.String(err.Error())})
			return fmt.Errorf("block %d: %w", id, err)
		}
		defer func() {
			// The responder, the other reader of downR, has stopped by
			// now. A pipeline that ended cleanly leaves the next datanode
			// waiting for another operation: the next pipeline through it
			// needs no new connection.
			xfer.FreeReader(downR)
			if clean {
				down.SetDeadline(time.Time{})
				d.peers.Put(addr, down)
			} else {
				down.Close()
			}
		}()
	}
	var rw *replicaWriter
	if recovery {
		rw, err = d.reopenForRecovery(id, gs, req.GetLatestGenerationStamp(), int64(req.GetMinBytesRcvd()))
		if errors.Is(err, ErrReplicaNotFound) && req.GetMinBytesRcvd() == 0 {
			// Nothing was acknowledged: start the replica afresh.
			rw, err = d.store.create(id, req.GetLatestGenerationStamp(), cs.GetType())
		}
	} else {
		rw, err = d.store.create(id, gs, cs.GetType())
	}
	if err != nil {
		respond(up, pb.Status_ERROR, err.Error())
		return err
	}
	defer func() {
		// What a failed pipeline received stays, finalized, for pipeline
		// or lease recovery; the master deletes it if nobody needs it.
		if !rw.finished.Load() && rw.length > 0 {
			if rw.finish() == nil {
				d.queueIBR(&pb.BlockProto{BlockId: proto.Uint64(rw.id), GenStamp: proto.Uint64(rw.gs),
					NumBytes: proto.Uint64(uint64(rw.length))}, nil)
			}
		}
		rw.abort() // no-op once finished
	}()
	if err := xfer.WriteDelimited(up, &pb.BlockOpResponseProto{Status: pb.Status_SUCCESS.Enum(), FirstBadLink: proto.String("")}); err != nil {
		return err
	}

	acks := make(chan toAck, ackQueue)
	responderDone := make(chan error, 1)
	go func() { responderDone <- respondAcks(up, downR, down, acks) }()
	downFailed, recvErr := d.receivePackets(rw, tab, upR, up, down, acks)
	close(acks)
	if recvErr != nil && down != nil {
		down.Close() // unblock a responder waiting for a downstream ack
	}
	respErr := <-responderDone
	if recvErr != nil {
		return fmt.Errorf("block %d: %w", id, recvErr)
	}
	if respErr != nil {
		return fmt.Errorf("block %d: %w", id, respErr)
	}
	clean = !downFailed
	return nil
}

type badLinkError struct {
	addr string
	err  error
}

func (e *badLinkError) Error() string { return e.err.Error() }
func (e *badLinkError) Unwrap() error { return e.err }

func firstBadLink(err error, addr string) string {
	if bl, ok := err.(*badLinkError); ok && bl.addr != "" {
		return bl.addr
	}
	return addr
}

// connectDownstream opens the pipeline to the next datanode with the rest
// of the targets; the reader is xfer's pooled one.
func (d *DataNode) connectDownstream(addr string, req *pb.OpWriteBlockProto) (net.Conn, *bufio.Reader, error) {
	fwd := req.CloneVT()
	fwd.Targets = req.GetTargets()[1:]
	if len(fwd.TargetStorageTypes) > 0 {
		fwd.TargetStorageTypes = fwd.TargetStorageTypes[1:]
	}
	if len(fwd.TargetStorageIds) > 0 {
		fwd.TargetStorageIds = fwd.TargetStorageIds[1:]
	}
	if len(fwd.TargetPinnings) > 0 {
		fwd.TargetPinnings = fwd.TargetPinnings[1:]
	}
	c, r, err := xfer.SendOp(&d.peers, addr, xfer.OpWriteBlock, fwd)
	if err != nil {
		return nil, nil, fmt.Errorf("next datanode %s: %w", addr, err)
	}
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(r, resp); err != nil {
		xfer.FreeReader(r)
		c.Close()
		return nil, nil, fmt.Errorf("next datanode %s: %w", addr, err)
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		xfer.FreeReader(r)
		c.Close()
		return nil, nil, &badLinkError{addr: resp.GetFirstBadLink(),
			err: fmt.Errorf("next datanode %s: %s: %s", addr, resp.GetStatus(), resp.GetMessage())}
	}
	return c, r, nil
}

// receivePackets reads packets from upstream until the last one. Only this
// goroutine touches rw. Once the next datanode fails, it goes on without
// it, as HDFS's datanodes do: receiving and writing, each ack saying the
// next datanode failed, until the writer, told so, recovers its pipeline
// and closes this one. Closing the connection at once instead could reset
// the writer's connection before it read that ack, and it would blame this
// datanode.
func (d *DataNode) receivePackets(rw *replicaWriter, tab *crc32.Table, upR *bufio.Reader, up, down net.Conn, acks chan<- toAck) (downFailed bool, err error) {
	// Each packet reuses the space of the one before, starting in pooled
	// room: a 4 KiB replica would otherwise allocate its packet's.
	pooled := xfer.NewPacketBuffer()
	defer xfer.FreePacketBuffer(pooled)
	raw := (*pooled)[:0]
	ack := func(a toAck) {
		a.downFailed = downFailed
		acks <- a
	}
	for {
		up.SetReadDeadline(time.Now().Add(ioTimeout))
		p, head, dataLen, err := xfer.ReadPacketHead(upR, raw)
		if err != nil {
			return downFailed, fmt.Errorf("receive packet: %w", err)
		}
		raw = head
		if dataLen > 0 {
			if p.Offset < rw.length {
				if err := rw.rewind(p.Offset); err != nil {
					return downFailed, fmt.Errorf("packet %d: %w", p.Seqno, err)
				}
			}
			if p.Offset != rw.length {
				return downFailed, fmt.Errorf("packet %d at offset %d, replica has %d bytes", p.Seqno, p.Offset, rw.length)
			}
			if err := rw.prepare(dataLen); err != nil {
				ack(toAck{seqno: p.Seqno, status: pb.Status_ERROR, last: true})
				return downFailed, err
			}
		}
		v := &xfer.Verifier{Tab: tab, Sums: p.Sums, Chunk: p.Offset / protocol.BytesPerChecksum}
		pieces, staged, err := rw.receive(upR, head, dataLen, v)
		if err == nil && dataLen > 0 {
			err = v.Done()
		}
		switch {
		case errors.Is(err, protocol.ErrCorruption):
			ack(toAck{seqno: p.Seqno, status: pb.Status_ERROR_CHECKSUM, last: true})
			return downFailed, fmt.Errorf("packet %d: %w", p.Seqno, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return downFailed, fmt.Errorf("receive packet: %w", err)
		case err != nil:
			ack(toAck{seqno: p.Seqno, status: pb.Status_ERROR, last: true})
			return downFailed, fmt.Errorf("receive packet: %w", err)
		}
		if down != nil {
			down.SetWriteDeadline(time.Now().Add(ioTimeout))
			bufs := append(net.Buffers{head}, pieces...)
			if _, err := bufs.WriteTo(down); err != nil {
				d.log.Warn("next datanode failed; going on without it", "block", rw.id, "packet", p.Seqno, "err", err)
				down, downFailed = nil, true
			}
		}
		if p.Seqno == heartbeatSeqno && !p.Last && dataLen == 0 {
			ack(toAck{seqno: p.Seqno})
			continue
		}
		if dataLen > 0 {
			var err error
			if !staged {
				err = rw.store(pieces[0])
			}
			if err == nil {
				err = rw.wrote(dataLen, p.Sums)
			}
			if err != nil {
				ack(toAck{seqno: p.Seqno, status: pb.Status_ERROR, last: true})
				return downFailed, err
			}
		}
		if p.Last {
			if err := rw.finish(); err != nil {
				ack(toAck{seqno: p.Seqno, status: pb.Status_ERROR, last: true})
				return downFailed, err
			}
			d.queueIBR(&pb.BlockProto{BlockId: proto.Uint64(rw.id), GenStamp: proto.Uint64(rw.gs),
				NumBytes: proto.Uint64(uint64(rw.length))}, nil)
			ack(toAck{seqno: p.Seqno, last: true})
			return downFailed, nil
		}
		ack(toAck{seqno: p.Seqno})
	}
}

// respondAcks sends one ack upstream per packet, in order: this datanode's
// status followed by the statuses of the datanodes downstream.
func respondAcks(up net.Conn, downR *bufio.Reader, down net.Conn, acks <-chan toAck) error {
	// Having stopped early (a failed ack), it still takes what the
	// receiver queues until the receiver stops too, so that the receiver
	// never blocks on a full queue nobody reads.
	defer func() {
		for range acks {
		}
	}()
	for a := range acks {
		statuses := []pb.Status{a.status}
		if a.downFailed {
			statuses = append(statuses, pb.Status_ERROR)
		} else if downR != nil && a.status == pb.Status_SUCCESS {
			down.SetReadDeadline(time.Now().Add(ioTimeout))
			ack := &pb.PipelineAckProto{}
			if err := xfer.ReadDelimited(downR, ack); err != nil {
				// Tell the writer the next datanode failed.
				xfer.WriteAck(up, a.seqno, []pb.Status{pb.Status_SUCCESS, pb.Status_ERROR})
				return fmt.Errorf("ack from next datanode: %w", err)
			}
			if ack.GetSeqno() != a.seqno {
				return fmt.Errorf("next datanode acked packet %d, expected %d", ack.GetSeqno(), a.seqno)
			}
			statuses = append(statuses, xfer.AckStatuses(ack)...)
		}
		up.SetWriteDeadline(time.Now().Add(ioTimeout))
		if err := xfer.WriteAck(up, a.seqno, statuses); err != nil {
			return fmt.Errorf("ack upstream: %w", err)
		}
		if a.last {
			return nil
		}
	}
	return nil
}

// reopenForRecovery waits briefly for the failed pipeline's receiver to let
// go of the replica (it notices the writer's closed connection), then
// reopens the replica for the recovered pipeline.
func (d *DataNode) reopenForRecovery(id, oldGS, newGS uint64, acked int64) (*replicaWriter, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		rw, err := d.store.reopen(id, oldGS, newGS, acked)
		if err == nil || !errors.Is(err, ErrReplicaExists) || time.Now().After(deadline) {
			return rw, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

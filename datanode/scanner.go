package datanode

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

// scanLoop re-verifies every replica's checksums, one pass per ScanPeriod,
// reading at most ScanRate bytes per second so scanning never crowds out
// clients. A replica that fails is quarantined and reported.
func (d *DataNode) scanLoop() {
	defer d.wg.Done()
	for {
		start := time.Now()
		scanned := int64(0)
		for _, b := range d.store.list() {
			select {
			case <-d.stop:
				return
			default:
			}
			n, err := d.verifyReplica(b.ID, b.GenStamp)
			scanned += n
			if err != nil {
				d.quarantine(b.ID, b.GenStamp, err)
			}
			if d.opts.ScanRate > 0 {
				want := time.Duration(float64(scanned) / float64(d.opts.ScanRate) * float64(time.Second))
				if ahead := want - time.Since(start); ahead > 0 {
					select {
					case <-d.stop:
						return
					case <-time.After(ahead):
					}
				}
			}
		}
		select {
		case <-d.stop:
			return
		case <-time.After(max(d.opts.ScanPeriod-time.Since(start), time.Second)):
		}
	}
}

// verifyReplica checks every chunk of a replica against its stored CRC.
// It returns the bytes read and an error wrapping protocol.ErrCorruption
// when the replica is bad.
func (d *DataNode) verifyReplica(id, gs uint64) (int64, error) {
	rr, err := d.store.open(id)
	if errors.Is(err, protocol.ErrCorruption) {
		return 0, err // a bad checksum header, or a packed record's
	}
	if err != nil || rr.gs != gs {
		if err == nil {
			rr.Close()
		}
		return 0, nil // deleted or rewritten meanwhile
	}
	defer rr.Close()
	if err := rr.eachPacket(func(int64, []byte, []byte) error { return nil }); err != nil {
		if !errors.Is(err, protocol.ErrCorruption) {
			err = fmt.Errorf("%w: %v", protocol.ErrCorruption, err) // an unreadable replica is damaged too
		}
		return 0, err
	}
	// The files must be exactly as long as the replica: a data file that
	// grew or a meta file that lost checksums is damage too.
	return rr.length, rr.checkSize()
}

// quarantine moves a corrupt replica (with generation stamp gs) out of
// service and tells the master, which has it copied again from a good
// replica.
func (d *DataNode) quarantine(id, gs uint64, why error) {
	r, ok := d.store.get(id)
	if !ok || r.genStamp != gs {
		return
	}
	moved, err := d.store.quarantine(id, gs)
	if !moved {
		return // gone meanwhile: the error was the replica moving, not damage
	}
	if err != nil {
		d.log.Error("quarantine corrupt replica", "block", id, "err", err)
	}
	d.log.Warn("corrupt replica quarantined", "block", id, "err", why)
	d.ibr.add(nil, nil, &pb.BlockProto{BlockId: proto.Uint64(id), GenStamp: proto.Uint64(r.genStamp),
		NumBytes: proto.Uint64(uint64(r.length))})
	d.kickIBR()
}

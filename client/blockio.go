package client

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

const (
	ioTimeout = xfer.IOTimeout
	// maxInFlight bounds the packets sent but not yet acked by the whole
	// pipeline, and so the memory a write holds (up to 1 MiB each).
	maxInFlight = 8
)

func xferAddr(id *pb.DatanodeIDProto) string { return xfer.Addr(id) }

func clientHeader(b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string) *pb.ClientOperationHeaderProto {
	return &pb.ClientOperationHeaderProto{
		BaseHeader: &pb.BaseHeaderProto{Block: b, Token: token},
		ClientName: proto.String(clientName),
	}
}

// blockReader streams part of one replica, verifying every chunk.
type blockReader struct {
	conn   net.Conn
	r      *bufio.Reader
	tab    *crc32.Table // the replica's checksum type
	skip   int64        // bytes before the requested offset in the first packet
	remain int64        // requested bytes not yet returned
	buf    []byte       // what is left of the last packet's data
	pkt    []byte       // the last packet, whose space the next one reuses
	pooled *[]byte      // the room pkt starts in, given back on Close
	chunk  int64        // chunk number of the next packet's first byte
	done   bool         // the last packet came
	addr   string
	// finished: the last packet was read (or the read failed); clean: the
	// block was read whole, the connection can carry another operation,
	// and the datanode is owed the read's status.
	finished, clean bool
	peers           *xfer.Peers
}

// openBlock asks the datanode at addr for n bytes of block b at off, on a
// kept connection if p has one (and on a new one if that fails: the
// datanode may have closed it), and reads the answer.
func openBlock(p *xfer.Peers, addr string, b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string, off, n int64) (*blockReader, error) {
	req := &pb.OpReadBlockProto{Header: clientHeader(b, token, clientName),
		Offset: proto.Uint64(uint64(off)), Len: proto.Uint64(uint64(n)), SendChecksums: proto.Bool(true)}
	c, r, err := xfer.SendOp(p, addr, xfer.OpReadBlock, req)
	if err != nil {
		return nil, err
	}
	br := &blockReader{conn: c, r: r, remain: n, addr: addr, peers: p, pooled: xfer.NewPacketBuffer()}
	br.pkt = (*br.pooled)[:0]
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(br.r, resp); err != nil {
		br.discard()
		return nil, err
	}

	if resp.GetStatus() != pb.Status_SUCCESS {
		br.discard()
		return nil, fmt.Errorf("datanode %s: %s: %s", addr, resp.GetStatus(), resp.GetMessage())
	}
	info := resp.GetReadOpChecksumInfo()
	cs := info.GetChecksum()
	if br.tab, err = xfer.ChecksumTable(cs.GetType()); err != nil || cs.GetBytesPerChecksum() != protocol.BytesPerChecksum {
		br.discard()
		return nil, fmt.Errorf("datanode %s: unsupported checksum %s/%d", addr, cs.GetType(), cs.GetBytesPerChecksum())
	}
	start := int64(info.GetChunkOffset())
	if start > off || off-start >= protocol.BytesPerChecksum {
		br.discard()
		return nil, fmt.Errorf("datanode %s: read starts at %d for offset %d", addr, start, off)
	}
	br.skip, br.chunk = off-start, start/protocol.BytesPerChecksum
	return br, nil
}

func (br *blockReader) Read(p []byte) (int, error) {
	if err := br.fill(); err != nil {
		return 0, err
	}
	n := copy(p, br.buf)
	br.consume(n)
	return n, nil
}

// consume drops the first n bytes of buf, which the caller took.
func (br *blockReader) consume(n int) {
	br.buf = br.buf[n:]
	br.remain -= int64(n)
}

// fill makes buf hold the next checked bytes of the block, reading the
// next packet if it is empty; io.EOF at the block's end.
func (br *blockReader) fill() error {
	for len(br.buf) == 0 {
		if br.done || br.remain == 0 {
			br.finish()
			return io.EOF
		}
		br.conn.SetDeadline(time.Now().Add(ioTimeout))
		// The data is checked as it is read, while in the CPU's cache.
		pk, raw, err := xfer.ReadCheckedPacket(br.r, br.pkt, br.tab, br.chunk)
		if errors.Is(err, protocol.ErrCorruption) {
			return fmt.Errorf("block from datanode %s: %w", br.addr, err)
		}
		if err != nil {
			return fmt.Errorf("read from datanode %s: %w", br.addr, err)
		}
		if pk.Last || len(pk.Data) == 0 {
			br.done = true
			if br.remain > 0 {
				return fmt.Errorf("datanode %s ended the block %d bytes early: %w", br.addr, br.remain, io.ErrUnexpectedEOF)
			}
			continue
		}
		br.pkt = raw // reused for the next packet, once buf is consumed
		br.chunk += xfer.NumChunks(int64(len(pk.Data)))
		data := pk.Data
		if br.skip > 0 {
			k := min(br.skip, int64(len(data)))
			data, br.skip = data[k:], br.skip-k
		}
		if int64(len(data)) > br.remain {
			data = data[:br.remain]
		}
		br.buf = data
	}
	return nil
}

// finish reads what is left of the datanode's answer (the empty last
// packet); the connection is then clean for another operation, owing the
// datanode the read's status, which Peers sends with that operation.
func (br *blockReader) finish() {
	if br.conn == nil || br.finished {
		return
	}
	br.finished = true
	if !br.done {
		br.conn.SetDeadline(time.Now().Add(ioTimeout))
		pk, _, err := xfer.ReadPacket(br.r, br.pkt)
		if err != nil || !pk.Last || len(pk.Data) != 0 {
			return
		}
		br.done = true
	}
	br.clean = br.r.Buffered() == 0
}

// discard closes the connection of a read that failed to start.
func (br *blockReader) discard() {
	br.finished = true // nothing to finish: the answer was an error
	br.Close()
}

// Close ends the read; a connection that finished cleanly is kept for
// the next read from the same datanode.
func (br *blockReader) Close() error {
	if br.conn == nil {
		return nil
	}
	if br.remain == 0 {
		br.finish() // a caller that read exactly what it asked for
	}
	var err error
	if br.clean {
		br.peers.PutAfterRead(br.addr, br.conn)
	} else {
		err = br.conn.Close()
	}
	br.conn = nil
	xfer.FreeReader(br.r)
	xfer.FreePacketBuffer(br.pooled)
	br.r, br.pooled, br.pkt, br.buf = nil, nil, nil, nil
	return err
}

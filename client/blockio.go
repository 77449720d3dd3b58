package client

import (
	"bufio"
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
	// pipeline, and so the memory a write holds (about 64 KiB each).
	maxInFlight = 16
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
	chunk  int64        // chunk number of the next packet's first byte
	done   bool
	addr   string
}

// openBlock asks the datanode at addr for n bytes of block b at off.
func openBlock(addr string, b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string, off, n int64) (*blockReader, error) {
	c, err := xfer.Dial(addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	req := &pb.OpReadBlockProto{Header: clientHeader(b, token, clientName),
		Offset: proto.Uint64(uint64(off)), Len: proto.Uint64(uint64(n)), SendChecksums: proto.Bool(true)}
	if err := xfer.WriteOp(c, xfer.OpReadBlock, req); err != nil {
		c.Close()
		return nil, err
	}
	br := &blockReader{conn: c, r: xfer.NewReader(c), remain: n, addr: addr}
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(br.r, resp); err != nil {
		br.Close()
		return nil, err
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		br.Close()
		return nil, fmt.Errorf("datanode %s: %s: %s", addr, resp.GetStatus(), resp.GetMessage())
	}
	info := resp.GetReadOpChecksumInfo()
	cs := info.GetChecksum()
	if br.tab, err = xfer.ChecksumTable(cs.GetType()); err != nil || cs.GetBytesPerChecksum() != protocol.BytesPerChecksum {
		br.Close()
		return nil, fmt.Errorf("datanode %s: unsupported checksum %s/%d", addr, cs.GetType(), cs.GetBytesPerChecksum())
	}
	start := int64(info.GetChunkOffset())
	if start > off || off-start >= protocol.BytesPerChecksum {
		br.Close()
		return nil, fmt.Errorf("datanode %s: read starts at %d for offset %d", addr, start, off)
	}
	br.skip, br.chunk = off-start, start/protocol.BytesPerChecksum
	return br, nil
}

func (br *blockReader) Read(p []byte) (int, error) {
	for len(br.buf) == 0 {
		if br.done || br.remain == 0 {
			br.finish()
			return 0, io.EOF
		}
		br.conn.SetDeadline(time.Now().Add(ioTimeout))
		pk, raw, err := xfer.ReadPacket(br.r, br.pkt)
		if err != nil {
			return 0, fmt.Errorf("read from datanode %s: %w", br.addr, err)
		}
		if pk.Last || len(pk.Data) == 0 {
			br.done = true
			if br.remain > 0 {
				return 0, fmt.Errorf("datanode %s ended the block %d bytes early: %w", br.addr, br.remain, io.ErrUnexpectedEOF)
			}
			continue
		}
		if err := xfer.VerifyChunks(br.tab, pk.Data, pk.Sums, br.chunk); err != nil {
			return 0, fmt.Errorf("block from datanode %s: %w", br.addr, err)
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
	n := copy(p, br.buf)
	br.buf = br.buf[n:]
	br.remain -= int64(n)
	return n, nil
}

// finish tells the datanode the read went well, as HDFS clients do.
func (br *blockReader) finish() {
	if br.conn != nil {
		xfer.WriteDelimited(br.conn, &pb.ClientReadStatusProto{Status: pb.Status_CHECKSUM_OK.Enum()})
	}
}

func (br *blockReader) Close() error {
	if br.conn == nil {
		return nil
	}
	err := br.conn.Close()
	br.conn = nil
	xfer.FreeReader(br.r)
	br.r = nil
	return err
}

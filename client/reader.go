package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

// locationWait bounds how long a read waits for a block to have a live
// replica (datanodes re-registering after a master restart).
const locationWait = 20 * time.Second

// FileReader reads a file. It is an io.Reader, io.ReaderAt, io.Seeker,
// io.WriterTo and io.Closer. Every chunk is verified against its CRC32C; a replica that
// fails (unreachable, short, corrupt) is skipped for the next one, and a
// corrupt one is reported to the master. Read and Seek must not be called
// concurrently; ReadAt may be.
type FileReader struct {
	c    *Client
	name string
	ctx  context.Context
	size atomic.Int64 // as of the last block list from the master

	infoOnce sync.Once
	info     *FileInfo
	infoErr  error

	mu     sync.Mutex // guards blocks (refreshed on failover)
	blocks []*pb.LocatedBlockProto

	pos    int64
	br     *blockReader
	brPos  int64 // file offset of br's next byte
	closed bool
}

// Open opens a file for reading.
func (c *Client) Open(ctx context.Context, name string) (*FileReader, error) {
	// One RPC, as HDFS clients open: the block list has the length.
	r := &FileReader{c: c, name: name, ctx: ctx}
	if err := r.refresh(); err != nil {
		// The master says "not found" for a directory too, as HDFS's
		// does: tell which.
		if errors.Is(err, fs.ErrNotExist) {
			if fi, serr := c.Stat(ctx, name); serr == nil && fi.IsDir() {
				return nil, &fs.PathError{Op: "open", Path: name, Err: ErrIsDir}
			}
		}
		return nil, err
	}
	return r, nil
}

// refresh fetches the block list and locations from the master.
func (r *FileReader) refresh() error {
	resp := &pb.GetBlockLocationsResponseProto{}
	req := &pb.GetBlockLocationsRequestProto{Src: proto.String(r.name), Offset: proto.Uint64(0), Length: proto.Uint64(math.MaxInt64)}
	if err := r.c.call(r.ctx, "getBlockLocations", req, resp); err != nil {
		return pathErr("open", r.name, err)
	}
	lbs := resp.GetLocations()
	if lbs == nil {
		return &fs.PathError{Op: "open", Path: r.name, Err: fs.ErrNotExist}
	}
	r.mu.Lock()
	r.blocks = lbs.GetBlocks()
	r.mu.Unlock()
	r.size.Store(int64(lbs.GetFileLength()))
	return nil
}

// Stat returns the file's info, asked of the master at the first call;
// its size is the reader's.
func (r *FileReader) Stat() (*FileInfo, error) {
	r.infoOnce.Do(func() {
		if fi, err := r.c.Stat(r.ctx, r.name); err != nil {
			r.infoErr = err
		} else {
			fi.size = r.Size()
			r.info = fi
		}
	})
	return r.info, r.infoErr
}

// Size is the file's length.
func (r *FileReader) Size() int64 { return r.size.Load() }

// blockAt returns the located block holding file offset off.
func (r *FileReader) blockAt(off int64) (*pb.LocatedBlockProto, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, lb := range r.blocks {
		start := int64(lb.GetOffset())
		if off >= start && off < start+int64(lb.GetB().GetNumBytes()) {
			return lb, nil
		}
	}
	return nil, fmt.Errorf("%s: no block holds offset %d", r.name, off)
}

// open starts reading n bytes at file offset off from some replica,
// trying each in turn, and all of them again after asking the master
// anew, until locationWait has passed.
func (r *FileReader) open(off, n int64) (*blockReader, error) {
	deadline := time.Now().Add(locationWait)
	for {
		lb, err := r.blockAt(off)
		if err != nil {
			return nil, err
		}
		// Every replica is tried again each round: one that refused may
		// be about to take the block's new generation stamp (recovery).
		tried := map[string]error{}
		inBlock := off - int64(lb.GetOffset())
		n := min(n, int64(lb.GetB().GetNumBytes())-inBlock)
		for _, loc := range lb.GetLocs() {
			addr := xferAddr(loc.GetId())
			br, err := openBlock(&r.c.peers, addr, lb.GetB(), lb.GetBlockToken(), r.c.name, inBlock, n)
			if err == nil {
				return br, nil
			}
			tried[addr] = err
		}
		if time.Now().After(deadline) {
			return nil, &fs.PathError{Op: "read", Path: r.name,
				Err: fmt.Errorf("no live replica of block %d could be read (tried %d: %v)", lb.GetB().GetBlockId(), len(tried), joinErrs(tried))}
		}
		// Every known replica failed or none is known yet: ask the master
		// again (datanodes may be re-registering) after a pause.
		select {
		case <-r.ctx.Done():
			return nil, r.ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if err := r.refresh(); err != nil {
			return nil, err
		}
	}
}

func joinErrs(m map[string]error) error {
	var errs []error
	for addr, err := range m {
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return errors.Join(errs...)
}

// reportCorrupt tells the master a replica failed its checksum.
func (r *FileReader) reportCorrupt(addr string, off int64) {
	lb, err := r.blockAt(off)
	if err != nil {
		return
	}
	for _, loc := range lb.GetLocs() {
		if xferAddr(loc.GetId()) == addr {
			req := &pb.ReportBadBlocksRequestProto{Blocks: []*pb.LocatedBlockProto{{B: lb.GetB(), Offset: lb.Offset,
				Locs: []*pb.DatanodeInfoProto{loc}, Corrupt: proto.Bool(true), BlockToken: lb.GetBlockToken()}}}
			r.c.call(r.ctx, "reportBadBlocks", req, &pb.ReportBadBlocksResponseProto{})
		}
	}
}

// maxReadRetries bounds replica failovers within one Read.
const maxReadRetries = 8

// Read reads from the current position, streaming block by block.
func (r *FileReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fs.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := r.fill(); err != nil {
		return 0, err
	}
	n := copy(p, r.br.buf)
	r.consume(n)
	return n, nil
}

// WriteTo writes the file from the current offset to its end to w. io.Copy
// from a FileReader calls it: each packet's data goes to w from where it
// was read and checked, not through io.Copy's buffer.
func (r *FileReader) WriteTo(w io.Writer) (int64, error) {
	if r.closed {
		return 0, fs.ErrClosed
	}
	var total int64
	for {
		if err := r.fill(); err == io.EOF {
			return total, nil
		} else if err != nil {
			return total, err
		}
		n, err := w.Write(r.br.buf)
		r.consume(n)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// consume moves past n bytes of the current block reader's buffer.
func (r *FileReader) consume(n int) {
	r.br.consume(n)
	r.pos += int64(n)
	r.brPos += int64(n)
}

// fill makes the current block reader's buffer hold the bytes at pos,
// opening the block or moving on to the next one, and to another replica
// when one fails; io.EOF at the end of the file.
func (r *FileReader) fill() error {
	for retries := 0; ; {
		if r.pos >= r.Size() {
			return io.EOF
		}
		if r.br == nil || r.brPos != r.pos {
			r.closeBlock()
			br, err := r.open(r.pos, math.MaxInt64)
			if err != nil {
				return err
			}
			r.br, r.brPos = br, r.pos
		}
		err := r.br.fill()
		if err == nil {
			return nil
		}
		if errors.Is(err, io.EOF) { // end of this block
			r.closeBlock()
			continue
		}
		if errors.Is(err, protocol.ErrCorruption) {
			r.reportCorrupt(r.br.addr, r.pos)
		}
		r.dropReplica(r.br.addr, r.pos)
		r.closeBlock()
		if retries++; retries > maxReadRetries {
			return &fs.PathError{Op: "read", Path: r.name, Err: err}
		}
	}
}

// dropReplica removes a failed datanode from the locations of the block
// at off, so the next open tries another replica.
func (r *FileReader) dropReplica(addr string, off int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, lb := range r.blocks {
		start := int64(lb.GetOffset())
		if off >= start && off < start+int64(lb.GetB().GetNumBytes()) {
			locs := lb.Locs[:0:0]
			for _, l := range lb.GetLocs() {
				if xferAddr(l.GetId()) != addr {
					locs = append(locs, l)
				}
			}
			lb.Locs = locs
		}
	}
}

func (r *FileReader) closeBlock() {
	if r.br != nil {
		r.br.Close()
		r.br = nil
	}
}

// ReadAt reads len(p) bytes at off, independently of the position.
func (r *FileReader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed {
		return 0, fs.ErrClosed
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: r.name, Err: errors.New("negative offset")}
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.Size() {
			return n, io.EOF
		}
		want := min(int64(len(p)-n), r.Size()-pos)
		var err error
		for retries := 0; ; retries++ {
			var br *blockReader
			br, err = r.open(pos, want)
			if err != nil {
				return n, err
			}
			var k int
			k, err = io.ReadFull(br, p[n:n+int(min(want, br.remain))])
			br.Close()
			n += k
			if err == nil {
				break
			}
			if errors.Is(err, protocol.ErrCorruption) {
				r.reportCorrupt(br.addr, pos)
			}
			r.dropReplica(br.addr, pos)
			if retries >= maxReadRetries {
				return n, &fs.PathError{Op: "readat", Path: r.name, Err: err}
			}
			pos, want = off+int64(n), want-int64(k)
		}
	}
	return n, nil
}

// Seek sets the position for the next Read.
func (r *FileReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.Size() + offset
	default:
		return 0, &fs.PathError{Op: "seek", Path: r.name, Err: errors.New("invalid whence")}
	}
	if abs < 0 {
		return 0, &fs.PathError{Op: "seek", Path: r.name, Err: errors.New("negative position")}
	}
	r.pos = abs
	return abs, nil
}

// Close releases the reader's connection.
func (r *FileReader) Close() error {
	r.closed = true
	r.closeBlock()
	return nil
}

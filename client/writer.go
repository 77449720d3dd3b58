package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// CreateOption configures Create.
type CreateOption func(*createOptions)

type createOptions struct {
	replication int
	blockSize   int64
	overwrite   bool
	parents     bool
	perm        fs.FileMode
}

// Replication sets the file's replication (default: the client's, else the
// master's).
func Replication(n int) CreateOption { return func(o *createOptions) { o.replication = n } }

// BlockSize sets the file's block size (default: the client's, else the
// master's).
func BlockSize(n int64) CreateOption { return func(o *createOptions) { o.blockSize = n } }

// Overwrite replaces an existing file when the new one is complete.
func Overwrite() CreateOption { return func(o *createOptions) { o.overwrite = true } }

// CreateParents creates missing parent directories.
func CreateParents() CreateOption { return func(o *createOptions) { o.parents = true } }

// maxSetupRetries is how many pipelines a block tries before the write
// fails (each retry excludes the datanode that failed).
const maxSetupRetries = 3

// FileWriter writes a new file. The file becomes visible only when Close
// returns nil; a write that fails leaves no file. A writer that dies
// without closing (a crashed process) holds its lease until the master's
// limit, and lease recovery then closes the file with the prefix that
// reached every live replica, as HDFS does.
type FileWriter struct {
	c           *Client
	name        string
	fileID      uint64
	blockSize   int64
	replication int // the file's, to restore a pipeline that lost datanodes
	ctx         context.Context

	bw       *xfer.Pipeline
	locs     []*pb.DatanodeInfoProto // the current block's pipeline
	token    *pb.TokenProto
	inBlock  int64                  // bytes written to the current block
	previous *pb.ExtendedBlockProto // the last finished block, with its length
	space    xfer.Space             // the next packet's room, when buf is not nil
	buf      []byte                 // its data so far, in space
	block    *pb.ExtendedBlockProto // the block being written
	err      error                  // sticky
	closed   bool
}

// Create starts writing a new file.
func (c *Client) Create(ctx context.Context, name string, opts ...CreateOption) (*FileWriter, error) {
	o := createOptions{replication: c.replication, blockSize: c.blockSize, perm: 0o644}
	for _, opt := range opts {
		opt(&o)
	}
	var flags uint32 = uint32(pb.CreateFlagProto_CREATE)
	if o.overwrite {
		flags |= uint32(pb.CreateFlagProto_OVERWRITE)
	}
	req := &pb.CreateRequestProto{Src: proto.String(name), Masked: &pb.FsPermissionProto{Perm: proto.Uint32(uint32(o.perm))},
		ClientName: proto.String(c.name), CreateFlag: proto.Uint32(flags), CreateParent: proto.Bool(o.parents),
		Replication: proto.Uint32(uint32(o.replication)), BlockSize: proto.Uint64(uint64(o.blockSize))}
	resp := &pb.CreateResponseProto{}
	if err := c.call(ctx, "create", req, resp); err != nil {
		return nil, pathErr("create", name, err)
	}
	c.writerOpened()
	return &FileWriter{c: c, name: name, fileID: resp.GetFs().GetFileId(), blockSize: int64(resp.GetFs().GetBlocksize()),
		replication: int(resp.GetFs().GetBlockReplication()), ctx: ctx}, nil
}

// freeBuffer gives the next packet's space back; the pipeline keeps the
// space of each packet sent until it is acked.
func (w *FileWriter) freeBuffer() {
	if w.buf != nil {
		w.space.Free()
		w.buf = nil
	}
}

// Write buffers p into packets and streams them down the current block's
// pipeline, starting new blocks as they fill.
func (w *FileWriter) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		k := copy(w.room(), p)
		p = p[k:]
		n += k
		if err := w.filled(k); err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReadFrom writes what r reads until its end. io.Copy to a FileWriter
// calls it: r's bytes are read straight into the packets, not through
// io.Copy's buffer and then into them.
func (w *FileWriter) ReadFrom(r io.Reader) (int64, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	var n int64
	for {
		k, err := r.Read(w.room())
		n += int64(k)
		if ferr := w.filled(k); ferr != nil {
			return n, ferr
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (w *FileWriter) usable() error {
	if w.closed {
		return fs.ErrClosed
	}
	return w.err
}

// room is the free part of the next packet: up to a full packet, and no
// further than the end of the block.
func (w *FileWriter) room() []byte {
	if w.buf == nil { // taken late and given back by Close: empty files cost no space
		w.space = xfer.NewSpace()
		w.buf = w.space.Data()[:0]
	}
	n := min(int64(cap(w.buf)-len(w.buf)), w.blockSize-w.inBlock-int64(len(w.buf)))
	return w.buf[len(w.buf) : len(w.buf)+int(n)]
}

// filled adds the k bytes just put in room to the packet and sends it once
// full.
func (w *FileWriter) filled(k int) error {
	w.buf = w.buf[:len(w.buf)+k]
	if len(w.buf) == cap(w.buf) || w.inBlock+int64(len(w.buf)) == w.blockSize {
		return w.flushPacket(false)
	}
	return nil
}

// flushPacket sends the buffered data as one packet, opening the block's
// pipeline first if needed and finishing the block when it is full. The
// last packet of the file is its block's last too.
func (w *FileWriter) flushPacket(last bool) error {
	n := len(w.buf)
	if n == 0 {
		return nil
	}
	if err := w.sendBuffered(0, last); err != nil {
		return err
	}
	w.inBlock += int64(n)
	if w.inBlock == w.blockSize {
		return w.finishBlock()
	}
	return nil
}

// sendBuffered sends the buffered bytes as one packet, opening the block's
// pipeline first if needed and recovering it if it fails. The packet takes
// its space along; the next one starts with this one's last keep bytes.
// The last packet of a block, if last, needs no empty one after it.
func (w *FileWriter) sendBuffered(keep int, last bool) error {
	if w.bw == nil {
		if err := w.startBlock(); err != nil {
			return w.fail(err)
		}
	}
	sp, data := w.space, w.buf
	w.buf = nil // room takes the next space
	if keep > 0 {
		k := copy(w.room(), data[len(data)-keep:])
		w.buf = w.buf[:k]
	}
	sums := xfer.ChunkSums(xfer.CRC32C, sp.Sums(), data)
	send := w.bw.Send
	if last {
		send = w.bw.SendLast
	}
	if err := send(sp, data, sums); err != nil {
		// The packet is among the unacked ones the recovered pipeline
		// gets again.
		if err := w.recoverPipeline(err); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

func (w *FileWriter) fail(err error) error {
	if w.bw != nil {
		w.bw.Abort()
		w.bw = nil
	}
	w.err = &fs.PathError{Op: "write", Path: w.name, Err: err}
	return w.err
}

// startBlock allocates the next block and sets up its pipeline, retrying
// with the failing datanode excluded.
func (w *FileWriter) startBlock() error {
	var exclude []*pb.DatanodeInfoProto
	var lastErr error
	for attempt := 0; attempt < maxSetupRetries; attempt++ {
		req := &pb.AddBlockRequestProto{Src: proto.String(w.name), ClientName: proto.String(w.c.name),
			Previous: w.previous, ExcludeNodes: exclude, FileId: proto.Uint64(w.fileID)}
		resp := &pb.AddBlockResponseProto{}
		if err := w.c.call(w.ctx, "addBlock", req, resp); err != nil {
			if lastErr != nil {
				return fmt.Errorf("%w (after: %v)", err, lastErr)
			}
			return err
		}
		lb := resp.GetBlock()
		if len(lb.GetLocs()) == 0 {
			return fmt.Errorf("block %d has no target datanodes", lb.GetB().GetBlockId())
		}
		op := xfer.WriteBlockOp(lb.GetB(), lb.GetBlockToken(), w.c.name, lb.GetLocs(), pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		bw, err := xfer.OpenPipeline(&w.c.peers, xferAddr(lb.GetLocs()[0].GetId()), op, maxInFlight)
		if err == nil {
			w.bw = bw
			w.block = lb.GetB()
			w.locs = lb.GetLocs()
			w.token = lb.GetBlockToken()
			w.inBlock = 0
			return nil
		}
		lastErr = err
		// Give the block back and try a pipeline without the bad node.
		w.c.call(w.ctx, "abandonBlock", &pb.AbandonBlockRequestProto{B: lb.GetB(), Src: proto.String(w.name),
			Holder: proto.String(w.c.name), FileId: proto.Uint64(w.fileID)}, &pb.AbandonBlockResponseProto{})
		var bad *xfer.BadLinkError
		if errors.As(err, &bad) {
			for _, loc := range lb.GetLocs() {
				if xferAddr(loc.GetId()) == bad.Addr {
					exclude = append(exclude, loc)
				}
			}
		}
	}
	return fmt.Errorf("set up pipeline: %w", lastErr)
}

// finishBlock closes the current block's pipeline once every datanode has
// acked every packet.
func (w *FileWriter) finishBlock() error {
	if err := w.recovering(func() error { return w.bw.Finish() }); err != nil {
		return err
	}
	b := w.block.CloneVT()
	b.NumBytes = proto.Uint64(uint64(w.inBlock))
	w.previous = b
	w.bw = nil
	w.inBlock = 0
	return nil
}

// Close flushes the last packet, finishes the last block and completes the
// file, which then appears in the namespace. If Close fails, the file does
// not appear. A timeout while completing is ambiguous: the master may have
// completed the file before the answer was lost; Stat tells.
func (w *FileWriter) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	defer w.c.writerClosed()
	defer w.freeBuffer()
	if w.err == nil {
		w.flushPacket(true)
	}
	if w.err == nil && w.bw != nil {
		w.finishBlock()
	}
	if w.err != nil {
		// The write failed and we know it: drop the file rather than leave
		// it for lease recovery to close with a prefix.
		w.c.adminCall(w.ctx, "abandonFile", &pb.AbandonFileRequestProto{Src: proto.String(w.name),
			FileId: proto.Uint64(w.fileID), ClientName: proto.String(w.c.name)}, &pb.AbandonFileResponseProto{})
		return w.err
	}
	req := &pb.CompleteRequestProto{Src: proto.String(w.name), ClientName: proto.String(w.c.name),
		Last: w.previous, FileId: proto.Uint64(w.fileID)}
	for backoff := 100 * time.Millisecond; ; backoff *= 2 {
		resp := &pb.CompleteResponseProto{}
		if err := w.c.call(w.ctx, "complete", req, resp); err != nil {
			w.err = pathErr("close", w.name, err)
			return w.err
		}
		if resp.GetResult() {
			return nil
		}
		if backoff > 5*time.Second {
			w.err = &fs.PathError{Op: "close", Path: w.name, Err: errors.New("master did not complete the file: blocks not replicated")}
			return w.err
		}
		time.Sleep(backoff)
	}
}

// recovering runs op on the current pipeline (op must read w.bw anew:
// recovery replaces it), recovering the pipeline and running op again
// when it fails, up to maxRecoveries times; a final failure fails the
// writer.
func (w *FileWriter) recovering(op func() error) error {
	err := op()
	for attempt := 0; err != nil && attempt < maxRecoveries; attempt++ {
		if rerr := w.recoverPipeline(err); rerr != nil {
			return w.fail(rerr)
		}
		err = op()
	}
	if err != nil {
		return w.fail(err)
	}
	return nil
}

// maxRecoveries bounds the pipeline recoveries of one block.
const maxRecoveries = 3

// recoverPipeline replaces a failed pipeline, HDFS-style: drop the
// datanode at fault, get a new generation stamp for the block, have the
// surviving datanodes cut their replicas to the bytes every one of them
// acknowledged and take the new stamp, resend the unacknowledged packets,
// and tell the master the block's new stamp and pipeline. The write goes
// on while one datanode survives; the replication monitor restores the
// block's full replication once the file is complete.
func (w *FileWriter) recoverPipeline(cause error) error {
	unacked, acked := w.bw.Unacked()
	sent := w.bw.Offset()
	nextSeq := w.bw.NextSeqno()
	w.bw.Abort()
	locs := w.locs
	var excluded []*pb.DatanodeInfoProto
	for attempt := 0; attempt < maxRecoveries; attempt++ {
		bad := 0
		var pe *xfer.PipelineError
		var bl *xfer.BadLinkError
		switch {
		case errors.As(cause, &pe) && pe.Bad >= 0:
			bad = pe.Bad
		case errors.As(cause, &bl):
			for i, l := range locs {
				if xferAddr(l.GetId()) == bl.Addr {
					bad = i
				}
			}
		}
		if bad >= len(locs) {
			bad = len(locs) - 1
		}
		survivors := append(append([]*pb.DatanodeInfoProto(nil), locs[:bad]...), locs[bad+1:]...)
		if len(survivors) == 0 {
			return fmt.Errorf("every datanode of the pipeline failed (last: %w)", cause)
		}
		excluded = append(excluded, locs[bad])
		survivors = w.replaceFailed(survivors, excluded, acked)
		ub := &pb.UpdateBlockForPipelineResponseProto{}
		if err := w.c.call(w.ctx, "updateBlockForPipeline", &pb.UpdateBlockForPipelineRequestProto{
			Block: w.block, ClientName: proto.String(w.c.name)}, ub); err != nil {
			return fmt.Errorf("recover pipeline: %w (after: %v)", err, cause)
		}
		newGS := ub.GetBlock().GetB().GetGenerationStamp()
		op := xfer.WriteBlockOp(w.block, w.token, w.c.name, survivors, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		op.Stage = pb.OpWriteBlockProto_PIPELINE_SETUP_STREAMING_RECOVERY.Enum()
		op.LatestGenerationStamp = proto.Uint64(newGS)
		op.MinBytesRcvd = proto.Uint64(uint64(acked))
		op.MaxBytesRcvd = proto.Uint64(uint64(sent))
		startSeq := nextSeq
		if len(unacked) > 0 {
			startSeq = unacked[0].Seqno
		}
		p, err := xfer.ResumePipeline(&w.c.peers, xferAddr(survivors[0].GetId()), op, maxInFlight, startSeq, acked)
		if err != nil {
			cause, locs = err, survivors
			continue
		}
		for _, pk := range unacked {
			if err = p.Resend(pk); err != nil {
				break
			}
		}
		if err != nil {
			p.Abort()
			cause, locs = err, survivors
			continue
		}
		old := w.block
		nb := old.CloneVT()
		nb.GenerationStamp = proto.Uint64(newGS)
		ids := make([]*pb.DatanodeIDProto, len(survivors))
		for i, s := range survivors {
			ids[i] = s.GetId()
		}
		if err := w.c.call(w.ctx, "updatePipeline", &pb.UpdatePipelineRequestProto{ClientName: proto.String(w.c.name),
			OldBlock: old, NewBlock: nb, NewNodes: ids}, &pb.UpdatePipelineResponseProto{}); err != nil {
			p.Abort()
			return fmt.Errorf("recover pipeline: %w", err)
		}
		w.bw, w.block, w.locs = p, nb, survivors
		return nil
	}
	return fmt.Errorf("pipeline recovery failed %d times (last: %w)", maxRecoveries, cause)
}

// Sync makes everything written so far visible to new readers (HDFS's
// hflush): it sends the buffered bytes, waits until every datanode of the
// pipeline has them, and tells the master the new length. A new file
// appears in the namespace at its first Sync. The data is in every
// replica's memory or disk, not necessarily on disk everywhere; Close
// makes it durable.
func (w *FileWriter) Sync() error {
	if w.closed {
		return fs.ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	// The partial last chunk goes again, whole, with the next bytes.
	n := len(w.buf)
	partial := n % protocol.BytesPerChecksum
	if n > 0 {
		if err := w.sendBuffered(partial, false); err != nil {
			return err
		}
	}
	if w.bw != nil {
		if err := w.recovering(func() error { return w.bw.Drain() }); err != nil {
			return err
		}
	}
	visible := w.inBlock + int64(n)
	if w.bw != nil {
		w.inBlock += int64(n - partial)
		w.bw.Rewind(int64(partial))
	}
	req := &pb.FsyncRequestProto{Src: proto.String(w.name), Client: proto.String(w.c.name),
		LastBlockLength: proto.Int64(visible), FileId: proto.Uint64(w.fileID)}
	switch {
	case w.bw != nil:
	case w.previous != nil: // at a block boundary: the last block is the finished one
		req.LastBlockLength = proto.Int64(int64(w.previous.GetNumBytes()))
	default: // no block yet
		req.LastBlockLength = proto.Int64(-1)
	}
	if err := w.c.call(w.ctx, "fsync", req, &pb.FsyncResponseProto{}); err != nil {
		return pathErr("sync", w.name, err)
	}
	return nil
}

// Append opens an existing file for writing at its end. godfs appends in
// new blocks, so the file's earlier blocks are never rewritten.
func (c *Client) Append(ctx context.Context, name string) (*FileWriter, error) {
	resp := &pb.AppendResponseProto{}
	if err := c.call(ctx, "append", &pb.AppendRequestProto{Src: proto.String(name), ClientName: proto.String(c.name)}, resp); err != nil {
		return nil, pathErr("append", name, err)
	}
	if resp.GetBlock() != nil {
		return nil, &fs.PathError{Op: "append", Path: name,
			Err: fmt.Errorf("%w: the server wants the last block continued, which this client does not do", protocol.ErrUnsupported)}
	}
	c.writerOpened()
	return &FileWriter{c: c, name: name, fileID: resp.GetStat().GetFileId(), blockSize: int64(resp.GetStat().GetBlocksize()),
		replication: int(resp.GetStat().GetBlockReplication()), ctx: ctx}, nil
}

// replaceFailed brings a shrunken pipeline back to the file's replication,
// as HDFS does: the master names new datanodes, and a survivor copies the
// block so far (the acked bytes; with none, there is nothing to copy) to
// each (TRANSFER_BLOCK) before the pipeline resumes with them at its end.
// A failure here only means fewer replicas until the replication monitor
// catches up, so it is not an error.
func (w *FileWriter) replaceFailed(survivors, excluded []*pb.DatanodeInfoProto, acked int64) []*pb.DatanodeInfoProto {
	want := w.replication - len(survivors)
	if want <= 0 {
		return survivors
	}
	resp := &pb.GetAdditionalDatanodeResponseProto{}
	err := w.c.call(w.ctx, "getAdditionalDatanode", &pb.GetAdditionalDatanodeRequestProto{Src: proto.String(w.name),
		Blk: w.block, Existings: survivors, Excludes: excluded, NumAdditionalNodes: proto.Uint32(uint32(want)),
		ClientName: proto.String(w.c.name), FileId: proto.Uint64(w.fileID)}, resp)
	if err != nil {
		return survivors
	}
	known := map[string]bool{}
	for _, s := range survivors {
		known[s.GetId().GetDatanodeUuid()] = true
	}
	added := 0
	for _, loc := range resp.GetBlock().GetLocs() {
		if known[loc.GetId().GetDatanodeUuid()] {
			continue
		}
		if acked == 0 {
			// Nothing to copy (the survivors dropped their empty
			// replicas): the recovered pipeline starts the block afresh
			// on every node, the new one too.
			survivors = append(survivors, loc)
			added++
			continue
		}
		// Any survivor can be the source: each holds every acked byte.
		for _, src := range survivors[:len(survivors)-added] {
			if err := transferTo(src, loc, w.block, w.token, w.c.name); err == nil {
				survivors = append(survivors, loc)
				added++
				break
			}
		}
	}
	return survivors
}

// transferTo asks the datanode src to copy its replica of b to dst.
func transferTo(src, dst *pb.DatanodeInfoProto, b *pb.ExtendedBlockProto, token *pb.TokenProto, clientName string) error {
	c, err := xfer.Dial(xferAddr(src.GetId()))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	req := &pb.OpTransferBlockProto{Header: clientHeader(b, token, clientName), Targets: []*pb.DatanodeInfoProto{dst}}
	if err := xfer.WriteOp(c, xfer.OpTransferBlock, req); err != nil {
		return err
	}
	resp := &pb.BlockOpResponseProto{}
	if err := xfer.ReadDelimited(bufio.NewReader(c), resp); err != nil {
		return err
	}
	if resp.GetStatus() != pb.Status_SUCCESS {
		return fmt.Errorf("transfer to %s: %s: %s", xferAddr(dst.GetId()), resp.GetStatus(), resp.GetMessage())
	}
	return nil
}

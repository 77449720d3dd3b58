package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/placement"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
)

// listingLimit is how many entries one getListing page holds (HDFS's
// dfs.ls.limit).
const listingLimit = 1000

// clientMethods are the ClientProtocol methods godfs serves. Any other
// method gets RpcNoSuchMethodException with a clear message.
func (m *Master) clientMethods() map[string]hrpc.Method {
	return map[string]hrpc.Method{
		"getFileInfo":            hrpc.Handle(newMsg[pb.GetFileInfoRequestProto], m.getFileInfo),
		"getListing":             hrpc.Handle(newMsg[pb.GetListingRequestProto], m.getListing),
		"mkdirs":                 hrpc.Handle(newMsg[pb.MkdirsRequestProto], m.mkdirs),
		"create":                 hrpc.Handle(newMsg[pb.CreateRequestProto], m.create),
		"append":                 hrpc.Handle(newMsg[pb.AppendRequestProto], m.appendFile),
		"addBlock":               hrpc.Handle(newMsg[pb.AddBlockRequestProto], m.addBlock),
		"abandonBlock":           hrpc.Handle(newMsg[pb.AbandonBlockRequestProto], m.abandonBlock),
		"complete":               hrpc.Handle(newMsg[pb.CompleteRequestProto], m.complete),
		"getBlockLocations":      hrpc.Handle(newMsg[pb.GetBlockLocationsRequestProto], m.getBlockLocations),
		"delete":                 hrpc.Handle(newMsg[pb.DeleteRequestProto], m.delete),
		"rename":                 hrpc.Handle(newMsg[pb.RenameRequestProto], m.rename),
		"rename2":                hrpc.Handle(newMsg[pb.Rename2RequestProto], m.rename2),
		"setPermission":          hrpc.Handle(newMsg[pb.SetPermissionRequestProto], m.setPermission),
		"setOwner":               hrpc.Handle(newMsg[pb.SetOwnerRequestProto], m.setOwner),
		"setReplication":         hrpc.Handle(newMsg[pb.SetReplicationRequestProto], m.setReplication),
		"setTimes":               hrpc.Handle(newMsg[pb.SetTimesRequestProto], m.setTimes),
		"truncate":               hrpc.Handle(newMsg[pb.TruncateRequestProto], m.truncate),
		"getContentSummary":      hrpc.Handle(newMsg[pb.GetContentSummaryRequestProto], m.getContentSummary),
		"getFsStats":             hrpc.Handle(newMsg[pb.GetFsStatusRequestProto], m.getFsStats),
		"getServerDefaults":      hrpc.Handle(newMsg[pb.GetServerDefaultsRequestProto], m.getServerDefaults),
		"renewLease":             hrpc.Handle(newMsg[pb.RenewLeaseRequestProto], m.renewLease),
		"setSafeMode":            hrpc.Handle(newMsg[pb.SetSafeModeRequestProto], m.setSafeMode),
		"getDatanodeReport":      hrpc.Handle(newMsg[pb.GetDatanodeReportRequestProto], m.getDatanodeReport),
		"reportBadBlocks":        hrpc.Handle(newMsg[pb.ReportBadBlocksRequestProto], m.reportBadBlocks),
		"getPreferredBlockSize":  hrpc.Handle(newMsg[pb.GetPreferredBlockSizeRequestProto], m.getPreferredBlockSize),
		"isFileClosed":           hrpc.Handle(newMsg[pb.IsFileClosedRequestProto], m.isFileClosed),
		"fsync":                  hrpc.Handle(newMsg[pb.FsyncRequestProto], m.fsync),
		"updateBlockForPipeline": hrpc.Handle(newMsg[pb.UpdateBlockForPipelineRequestProto], m.updateBlockForPipeline),
		"updatePipeline":         hrpc.Handle(newMsg[pb.UpdatePipelineRequestProto], m.updatePipeline),
		"recoverLease":           hrpc.Handle(newMsg[pb.RecoverLeaseRequestProto], m.recoverLease),
		"getAdditionalDatanode":  hrpc.Handle(newMsg[pb.GetAdditionalDatanodeRequestProto], m.getAdditionalDatanode),
	}
}

func newMsg[T any]() *T { return new(T) }

// fileStatus converts an inode to HDFS's file status; name is the local
// name to report (empty for getFileInfo, as HDFS does).
func (m *Master) fileStatus(n *namespace.Inode, name string) *pb.HdfsFileStatusProto {
	// One allocation for the status and every field it points to (proto2
	// fields are pointers): a listing makes one of these an entry.
	v := &struct {
		st                                  pb.HdfsFileStatusProto
		perm                                pb.FsPermissionProto
		permBits, repl                      uint32
		owner, group                        string
		mtime, atime, id, length, blockSize uint64
		children                            int32
		fileType                            pb.HdfsFileStatusProto_FileType
	}{
		permBits: uint32(n.Perm()), owner: n.Owner(), group: n.Group(),
		mtime: uint64(n.Mtime()), atime: uint64(n.Atime()), id: n.ID(),
	}
	st := &v.st
	v.perm.Perm = &v.permBits
	st.Path, st.Permission, st.Owner, st.Group = []byte(name), &v.perm, &v.owner, &v.group
	st.ModificationTime, st.AccessTime, st.FileId = &v.mtime, &v.atime, &v.id
	st.FileType, st.Length, st.ChildrenNum = &v.fileType, &v.length, &v.children
	if n.IsDir() {
		v.fileType = pb.HdfsFileStatusProto_IS_DIR
		v.children = int32(n.NumChildren())
	} else {
		v.fileType = pb.HdfsFileStatusProto_IS_FILE
		v.length, v.repl, v.blockSize = n.Len(), uint32(n.Replication()), n.BlockSize()
		st.BlockReplication, st.Blocksize = &v.repl, &v.blockSize
	}
	return st
}

func (m *Master) getFileInfo(ctx context.Context, req *pb.GetFileInfoRequestProto) (*pb.GetFileInfoResponseProto, error) {
	resp := &pb.GetFileInfoResponseProto{}
	err := m.locked(func() error {
		n, err := m.mu.tree.Lookup(req.GetSrc())
		if err != nil {
			if isNotFound(err) {
				return nil // HDFS answers a missing path with no status, not an error
			}
			return err
		}
		resp.Fs = m.fileStatus(n, "")
		return nil
	})
	return resp, err
}

func isNotFound(err error) bool {
	return errorsIs(err, fs.ErrNotExist) || errorsIs(err, protocol.ErrNotDir)
}

func (m *Master) getListing(ctx context.Context, req *pb.GetListingRequestProto) (*pb.GetListingResponseProto, error) {
	resp := &pb.GetListingResponseProto{}
	err := m.locked(func() error {
		n, err := m.mu.tree.Lookup(req.GetSrc())
		if err != nil {
			if isNotFound(err) {
				return nil // no dirList: the path does not exist
			}
			return err
		}
		list := &pb.DirectoryListingProto{}
		if !n.IsDir() {
			list.PartialListing = []*pb.HdfsFileStatusProto{m.fileStatus(n, "")}
			list.RemainingEntries = proto.Uint32(0)
			resp.DirList = list
			return nil
		}
		children, more := n.ChildrenAfter(string(req.GetStartAfter()), listingLimit)
		for _, c := range children {
			st := m.fileStatus(c, c.Name())
			if req.GetNeedLocation() && !c.IsDir() {
				st.Locations = m.locatedBlocksLocked(ctx, c, 0, math.MaxUint64)
			}
			list.PartialListing = append(list.PartialListing, st)
		}
		list.RemainingEntries = proto.Uint32(uint32(more))
		resp.DirList = list
		return nil
	})
	return resp, err
}

func (m *Master) mkdirs(ctx context.Context, req *pb.MkdirsRequestProto) (*pb.MkdirsResponseProto, error) {
	user := hrpc.CallerFrom(ctx).User
	err := m.update(func() error {
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: req.GetSrc(),
			FileID: m.mu.tree.NextInodeID(), Perm: uint16(req.GetMasked().GetPerm() & 0o1777),
			Owner: ownerOr(user), Group: m.cfg.SuperGroup, Time: m.nowMillis(), Parents: req.GetCreateParent()})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.MkdirsResponseProto{Result: proto.Bool(true)}, nil
}

func ownerOr(user string) string {
	if user == "" {
		return "godfs"
	}
	return user
}

func (m *Master) create(ctx context.Context, req *pb.CreateRequestProto) (*pb.CreateResponseProto, error) {
	flags := req.GetCreateFlag()
	repl := req.GetReplication()
	if repl == 0 {
		repl = uint32(m.cfg.Replication)
	}
	bs := req.GetBlockSize()
	if bs == 0 {
		bs = m.cfg.BlockSize
	}
	switch {
	case repl > MaxReplication:
		return nil, fmt.Errorf("%w: replication %d is above the maximum %d", protocol.ErrInvalidArgument, repl, MaxReplication)
	case bs < MinBlockSize || bs > MaxBlockSize || bs%protocol.BytesPerChecksum != 0:
		return nil, fmt.Errorf("%w: block size %d must be a multiple of %d between %d and %d",
			protocol.ErrInvalidArgument, bs, protocol.BytesPerChecksum, MinBlockSize, uint64(MaxBlockSize))
	case req.GetClientName() == "":
		return nil, fmt.Errorf("%w: create needs a client name", protocol.ErrInvalidArgument)
	}
	if flags&uint32(pb.CreateFlagProto_APPEND) != 0 {
		return nil, fmt.Errorf("%w: create with the APPEND flag; call append", protocol.ErrUnsupported)
	}
	user := hrpc.CallerFrom(ctx).User
	resp := &pb.CreateResponseProto{}
	// A new file is invisible until complete or hflush, both of which wait
	// for the log, which holds the create before them: so creating one in
	// an existing directory answers without waiting for its fsync, and a
	// crash before that fsync loses a file nobody but its writer knew of
	// (whose next call then fails). Replacing a file, creating parents or
	// taking over a lease is visible, and waits.
	err := m.change(func() (bool, error) {
		before := m.mu.tree.LastIndex()
		if _, err := m.takeOverLocked(req.GetSrc()); err != nil {
			return true, err
		}
		_, lookupErr := m.mu.tree.Lookup(req.GetSrc())
		parent, _ := m.mu.tree.Lookup(path.Dir(req.GetSrc()))
		private := errors.Is(lookupErr, fs.ErrNotExist) && parent != nil && parent.IsDir() &&
			m.mu.tree.LastIndex() == before
		res, err := m.applyLocked(&namespace.Entry{Type: namespace.OpCreate, Path: req.GetSrc(),
			FileID: m.mu.tree.NextInodeID(), Perm: uint16(req.GetMasked().GetPerm() & 0o1777),
			Owner: ownerOr(user), Group: m.cfg.SuperGroup, Time: m.nowMillis(),
			Replication: uint16(repl), BlockSize: bs, Client: req.GetClientName(),
			Overwrite: flags&uint32(pb.CreateFlagProto_OVERWRITE) != 0, Parents: req.GetCreateParent()})
		if err != nil {
			return true, err
		}
		m.renewLeaseLocked(req.GetClientName())
		resp.Fs = m.fileStatus(res.Inode, "")
		return !private, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// appendFile reopens a file for writing. godfs appends in new blocks (as
// HDFS's NEW_BLOCK flag does), so the response never carries a last block
// to continue and the client starts its next block with addBlock.
func (m *Master) appendFile(ctx context.Context, req *pb.AppendRequestProto) (*pb.AppendResponseProto, error) {
	resp := &pb.AppendResponseProto{}
	err := m.update(func() error {
		if _, err := m.takeOverLocked(req.GetSrc()); err != nil {
			return err
		}
		res, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAppend, Path: req.GetSrc(),
			Client: req.GetClientName(), Time: m.nowMillis()})
		if err != nil {
			return err
		}
		m.renewLeaseLocked(req.GetClientName())
		resp.Stat = m.fileStatus(res.Inode, "")
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// fileIDForLocked resolves the file a write call is about: by id when the client
// sent one, else by path among the files under construction.
func (m *Master) fileIDForLocked(src string, fileID uint64, client string) uint64 {
	if fileID != 0 {
		return fileID
	}
	if n := m.mu.tree.WritingAt(src); n != nil && n.Client() == client {
		return n.ID()
	}
	return 0
}

func blockFrom(b *pb.ExtendedBlockProto) *namespace.Block {
	if b == nil {
		return nil
	}
	return &namespace.Block{ID: b.GetBlockId(), GenStamp: b.GetGenerationStamp(), Len: b.GetNumBytes()}
}

func (m *Master) addBlock(ctx context.Context, req *pb.AddBlockRequestProto) (*pb.AddBlockResponseProto, error) {
	exclude := map[string]bool{}
	for _, dn := range req.GetExcludeNodes() {
		exclude[dn.GetId().GetDatanodeUuid()] = true
		exclude[xferAddr(dn.GetId())] = true
	}
	clientIP := callerIP(ctx)
	resp := &pb.AddBlockResponseProto{}
	// An addBlock answers before its entry is durable: a crash before the
	// fsync loses a block that nothing durable refers to yet (the
	// complete or hflush that would is logged after it and waits), and
	// the writer's next call fails. Its id must then never be handed out
	// again: ids are reserved ahead in the log, and a restarted master
	// skips past the reserved ones (reserveBlockIDsLocked).
	err := m.change(func() (wait bool, err error) {
		id := m.fileIDForLocked(req.GetSrc(), req.GetFileId(), req.GetClientName())
		n := m.mu.tree.UnderConstruction(id)
		if n == nil {
			return true, &fs.PathError{Op: "addBlock", Path: req.GetSrc(), Err: protocol.ErrNoLease}
		}
		chosen := placement.Choose(m.placementNodesLocked(), placement.Request{N: int(n.Replication()),
			WriterHost: clientIP, Exclude: exclude, BlockSize: int64(n.BlockSize())}, m.cfg.Rand)
		if len(chosen) == 0 {
			return true, m.noPlacementLocked(req.GetSrc(), int64(n.BlockSize()), len(req.GetExcludeNodes()))
		}
		m.mu.blocks.schedule(chosen, int64(n.BlockSize()))
		targets := make([]*datanode, len(chosen))
		for i, c := range chosen {
			targets[i] = m.mu.blocks.nodes[c.ID]
		}
		if wait, err = m.reserveBlockIDsLocked(); err != nil {
			return true, err
		}
		b := namespace.Block{ID: m.mu.tree.NextBlockID(), GenStamp: m.mu.tree.NextGenStamp()}
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAddBlock, FileID: id, Path: req.GetSrc(),
			Client: req.GetClientName(), Block: &b, Previous: blockFrom(req.GetPrevious())}); err != nil {
			return true, err
		}
		uuids := make([]string, len(targets))
		for i, t := range targets {
			uuids[i] = t.uuid
		}
		m.mu.blocks.add(id, b, uuids)
		m.renewLeaseLocked(req.GetClientName())
		resp.Block = m.locatedBlock(b, n.Len(), targets)
		return wait, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// blockIDsReserved is how many block ids one OpReserveBlockIDs reserves:
// a restart skips up to twice that many.
const blockIDsReserved = 100_000

// reserveBlockIDsLocked logs a reservation of block ids when the next one
// is not reserved yet, and reports whether it did: the caller must then
// wait for the log before it hands that id out. The first after a start
// also skips past every id reserved before: up to the last reservation
// replayed, and a whole reservation past the next id, for one made before
// the checkpoint the namespace was loaded from (made when the next id was
// at most what the checkpoint holds).
func (m *Master) reserveBlockIDsLocked() (bool, error) {
	t := m.mu.tree
	next := t.NextBlockID()
	if m.mu.blockIDsSkipped && next < t.ReservedBlockIDs() {
		return false, nil
	}
	e := &namespace.Entry{Type: namespace.OpReserveBlockIDs}
	if !m.mu.blockIDsSkipped {
		next = max(next+blockIDsReserved, t.ReservedBlockIDs())
		e.Block = &namespace.Block{ID: next}
	}
	e.Length = next + blockIDsReserved
	if _, err := m.applyLocked(e); err != nil {
		return true, err
	}
	m.mu.blockIDsSkipped = true
	return true, nil
}

// noPlacementLocked says why no datanode could take a block of src: none
// is live, the writer excluded them, or they are full. m.mu must be held.
func (m *Master) noPlacementLocked(src string, blockSize int64, excluded int) error {
	nodes := m.placementNodesLocked()
	full := 0
	for _, n := range nodes {
		if n.Usable && n.Remaining < blockSize {
			full++
		}
	}
	if full > 0 {
		return fmt.Errorf("%w: %s: %d of the %d live datanodes have less than the %d MiB free a block needs (%d excluded by the writer)",
			protocol.ErrNoDatanodes, src, full, len(nodes), max(blockSize>>20, 1), excluded)
	}
	return fmt.Errorf("%w: cannot place a block of %s (%d live, %d excluded)", protocol.ErrNoDatanodes, src, len(nodes), excluded)
}

func (m *Master) abandonBlock(ctx context.Context, req *pb.AbandonBlockRequestProto) (*pb.AbandonBlockResponseProto, error) {
	err := m.update(func() error {
		id := m.fileIDForLocked(req.GetSrc(), req.GetFileId(), req.GetHolder())
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAbandonBlock, FileID: id, Path: req.GetSrc(),
			Client: req.GetHolder(), Block: blockFrom(req.GetB())})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.AbandonBlockResponseProto{}, nil
}

func (m *Master) complete(ctx context.Context, req *pb.CompleteRequestProto) (*pb.CompleteResponseProto, error) {
	err := m.update(func() error {
		id := m.fileIDForLocked(req.GetSrc(), req.GetFileId(), req.GetClientName())
		if id != 0 && m.mu.tree.UnderConstruction(id) == nil {
			// Already complete: a retried complete whose answer was lost.
			if n, err := m.mu.tree.Lookup(req.GetSrc()); err == nil && n.ID() == id {
				return nil
			}
		}
		res, err := m.applyLocked(&namespace.Entry{Type: namespace.OpComplete, FileID: id, Path: req.GetSrc(),
			Client: req.GetClientName(), Previous: blockFrom(req.GetLast()), Time: m.nowMillis()})
		if err == nil {
			for _, b := range res.Inode.Blocks() {
				delete(m.mu.blocks.lens, b.ID) // only needed while the file is being written
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.CompleteResponseProto{Result: proto.Bool(true)}, nil
}

// fsync (hflush) makes what a writer has flushed visible to new readers:
// the last block's length as the writer reports it, and a new file's path.
func (m *Master) fsync(ctx context.Context, req *pb.FsyncRequestProto) (*pb.FsyncResponseProto, error) {
	err := m.update(func() error {
		id := m.fileIDForLocked(req.GetSrc(), req.GetFileId(), req.GetClient())
		n := m.mu.tree.UnderConstruction(id)
		if n == nil {
			return &fs.PathError{Op: "fsync", Path: req.GetSrc(), Err: protocol.ErrNoLease}
		}
		e := &namespace.Entry{Type: namespace.OpFsync, FileID: id, Client: req.GetClient(), Time: m.nowMillis()}
		if last, ok := n.LastBlock(); ok && req.GetLastBlockLength() >= 0 {
			e.Block = &namespace.Block{ID: last.ID, GenStamp: last.GenStamp, Len: uint64(req.GetLastBlockLength())}
		}
		if _, err := m.applyLocked(e); err != nil {
			return err
		}
		m.renewLeaseLocked(req.GetClient())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.FsyncResponseProto{}, nil
}

// locatedBlock builds the LocatedBlockProto for block b at offset off.
func (m *Master) locatedBlock(b namespace.Block, off uint64, locs []*datanode) *pb.LocatedBlockProto {
	lb := &pb.LocatedBlockProto{
		B: &pb.ExtendedBlockProto{PoolId: proto.String(m.poolID), BlockId: proto.Uint64(b.ID),
			GenerationStamp: proto.Uint64(b.GenStamp), NumBytes: proto.Uint64(b.Len)},
		Offset:     proto.Uint64(off),
		Corrupt:    proto.Bool(false),
		BlockToken: emptyToken,
	}
	for _, dn := range locs {
		lb.Locs = append(lb.Locs, dn.info)
		lb.StorageTypes = append(lb.StorageTypes, pb.StorageTypeProto_DISK)
		lb.StorageIDs = append(lb.StorageIDs, dn.storageID)
		lb.IsCached = append(lb.IsCached, false)
	}
	return lb
}

// emptyToken is the block token of every located block (godfs does not
// sign them); read-only, shared by every response, as datanode.info is.
var emptyToken = &pb.TokenProto{Identifier: []byte{}, Password: []byte{}, Kind: proto.String(""), Service: proto.String("")}

// locatedBlocksLocked lists the blocks of n overlapping [off, off+length).
// m.mu must be held.
func (m *Master) locatedBlocksLocked(ctx context.Context, n *namespace.Inode, off, length uint64) *pb.LocatedBlocksProto {
	ip := callerIP(ctx)
	lbs := &pb.LocatedBlocksProto{
		FileLength:          proto.Uint64(n.Len()),
		UnderConstruction:   proto.Bool(n.UnderConstruction()),
		IsLastBlockComplete: proto.Bool(!n.UnderConstruction()),
	}
	end := off + length
	if end < off {
		end = math.MaxUint64
	}
	var pos uint64
	for _, b := range n.Blocks() {
		bEnd := pos + b.Len
		if bEnd > off && pos < end || b.Len == 0 && pos >= off && pos < end {
			lbs.Blocks = append(lbs.Blocks, m.locatedBlock(b, pos, m.mu.blocks.locations(b.ID, ip, m.stale)))
		}
		pos = bEnd
	}
	if last, ok := n.LastBlock(); ok && len(lbs.Blocks) > 0 && lbs.Blocks[len(lbs.Blocks)-1].GetB().GetBlockId() == last.ID {
		lbs.LastBlock = lbs.Blocks[len(lbs.Blocks)-1]
	}
	return lbs
}

func (m *Master) getBlockLocations(ctx context.Context, req *pb.GetBlockLocationsRequestProto) (*pb.GetBlockLocationsResponseProto, error) {
	resp := &pb.GetBlockLocationsResponseProto{}
	err := m.locked(func() error {
		n, err := m.mu.tree.Lookup(req.GetSrc())
		if err != nil {
			return err
		}
		if n.IsDir() {
			return &fs.PathError{Op: "open", Path: req.GetSrc(), Err: fmt.Errorf("%w: path is not a file", fs.ErrNotExist)}
		}
		resp.Locations = m.locatedBlocksLocked(ctx, n, req.GetOffset(), req.GetLength())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (m *Master) delete(ctx context.Context, req *pb.DeleteRequestProto) (*pb.DeleteResponseProto, error) {
	err := m.update(func() error {
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpDelete, Path: req.GetSrc(),
			Recursive: req.GetRecursive(), Time: m.nowMillis()})
		return err
	})
	if isNotFound(err) {
		return &pb.DeleteResponseProto{Result: proto.Bool(false)}, nil
	}
	if err != nil {
		return nil, err
	}
	return &pb.DeleteResponseProto{Result: proto.Bool(true)}, nil
}

// rename is the old HDFS rename: into an existing directory if dst is one,
// and false rather than an exception when it cannot be done.
func (m *Master) rename(ctx context.Context, req *pb.RenameRequestProto) (*pb.RenameResponseProto, error) {
	err := m.update(func() error {
		dst := req.GetDst()
		if d, err := m.mu.tree.Lookup(dst); err == nil && d.IsDir() {
			if parts, err := namespace.SplitPath(req.GetSrc()); err == nil && len(parts) > 0 {
				dst = namespace.Join(append(mustSplit(dst), parts[len(parts)-1]))
			}
		}
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpRename, Path: req.GetSrc(), Dst: dst, Time: m.nowMillis()})
		return err
	})
	return &pb.RenameResponseProto{Result: proto.Bool(err == nil)}, nil
}

func mustSplit(p string) []string {
	parts, _ := namespace.SplitPath(p)
	return parts
}

func (m *Master) rename2(ctx context.Context, req *pb.Rename2RequestProto) (*pb.Rename2ResponseProto, error) {
	err := m.update(func() error {
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpRename, Path: req.GetSrc(), Dst: req.GetDst(),
			Overwrite: req.GetOverwriteDest(), Time: m.nowMillis()})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.Rename2ResponseProto{}, nil
}

func (m *Master) setAttr(e *namespace.Entry) error {
	return m.update(func() error {
		_, err := m.applyLocked(e)
		return err
	})
}

func (m *Master) setPermission(ctx context.Context, req *pb.SetPermissionRequestProto) (*pb.SetPermissionResponseProto, error) {
	err := m.setAttr(&namespace.Entry{Type: namespace.OpSetPermission, Path: req.GetSrc(), Perm: uint16(req.GetPermission().GetPerm())})
	if err != nil {
		return nil, err
	}
	return &pb.SetPermissionResponseProto{}, nil
}

func (m *Master) setOwner(ctx context.Context, req *pb.SetOwnerRequestProto) (*pb.SetOwnerResponseProto, error) {
	err := m.setAttr(&namespace.Entry{Type: namespace.OpSetOwner, Path: req.GetSrc(), Owner: req.GetUsername(), Group: req.GetGroupname()})
	if err != nil {
		return nil, err
	}
	return &pb.SetOwnerResponseProto{}, nil
}

func (m *Master) setReplication(ctx context.Context, req *pb.SetReplicationRequestProto) (*pb.SetReplicationResponseProto, error) {
	r := req.GetReplication()
	if r == 0 || r > MaxReplication {
		return nil, fmt.Errorf("%w: replication %d must be between 1 and %d", protocol.ErrInvalidArgument, r, MaxReplication)
	}
	err := m.setAttr(&namespace.Entry{Type: namespace.OpSetReplication, Path: req.GetSrc(), Replication: uint16(r)})
	if errorsIs(err, protocol.ErrIsDir) {
		return &pb.SetReplicationResponseProto{Result: proto.Bool(false)}, nil
	}
	if err != nil {
		return nil, err
	}
	return &pb.SetReplicationResponseProto{Result: proto.Bool(true)}, nil
}

func (m *Master) setTimes(ctx context.Context, req *pb.SetTimesRequestProto) (*pb.SetTimesResponseProto, error) {
	// HDFS sends -1 (as uint64) for "leave unchanged".
	err := m.setAttr(&namespace.Entry{Type: namespace.OpSetTimes, Path: req.GetSrc(),
		Time: int64(req.GetMtime()), Atime: int64(req.GetAtime())})
	if err != nil {
		return nil, err
	}
	return &pb.SetTimesResponseProto{}, nil
}

// truncate cuts a file. At a block boundary it is done at once (true); a
// cut inside a block also has the block's datanodes cut their replicas
// under a new generation stamp, which takes until their next heartbeat
// (false, as HDFS answers while it recovers the block).
func (m *Master) truncate(ctx context.Context, req *pb.TruncateRequestProto) (*pb.TruncateResponseProto, error) {
	done := true
	err := m.update(func() error {
		e := &namespace.Entry{Type: namespace.OpTruncate, Path: req.GetSrc(), Length: req.GetNewLength(), Time: m.nowMillis(),
			Block: &namespace.Block{GenStamp: m.mu.tree.NextGenStamp()}}
		before := map[uint64]namespace.Block{}
		if n, err := m.mu.tree.Lookup(req.GetSrc()); err == nil {
			for _, b := range n.Blocks() {
				before[b.ID] = b
			}
		}
		res, err := m.applyLocked(e)
		if err != nil {
			return err
		}
		if last, ok := res.Inode.LastBlock(); ok {
			if old := before[last.ID]; old.GenStamp != last.GenStamp {
				done = false
				m.cutReplicasLocked(last, old.GenStamp)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.TruncateResponseProto{Result: proto.Bool(done)}, nil
}

// cutReplicasLocked has every live replica of b (now shorter, under a new
// stamp) cut to match; replicas that miss it are stale and deleted when
// they show up. m.mu must be held.
func (m *Master) cutReplicasLocked(b namespace.Block, oldGS uint64) {
	if m.mu.blocks.blocks.Ptr(b.ID) == nil {
		return
	}
	for _, dn := range m.mu.blocks.holders(b.ID) {
		dn.recover = append(dn.recover, &pb.BlockRecoveryCommandProto{
			Block: blockProto(b.ID, oldGS, b.Len), NewGenStamp: proto.Uint64(b.GenStamp)})
	}
}

func (m *Master) getContentSummary(ctx context.Context, req *pb.GetContentSummaryRequestProto) (*pb.GetContentSummaryResponseProto, error) {
	var length, files, dirs, space uint64
	err := m.walkTree(req.GetPath(), func(n *namespace.Inode) {
		if n.IsDir() {
			dirs++
			return
		}
		files++
		length += n.Len()
		space += n.Len() * uint64(n.Replication())
	})
	if err != nil {
		return nil, err
	}
	noQuota := uint64(math.MaxUint64) // -1 on the wire: no quota
	return &pb.GetContentSummaryResponseProto{Summary: &pb.ContentSummaryProto{
		Length: proto.Uint64(length), FileCount: proto.Uint64(files), DirectoryCount: proto.Uint64(dirs),
		Quota: proto.Uint64(noQuota), SpaceConsumed: proto.Uint64(space), SpaceQuota: proto.Uint64(noQuota),
	}}, nil
}

func (m *Master) getFsStats(ctx context.Context, req *pb.GetFsStatusRequestProto) (*pb.GetFsStatsResponseProto, error) {
	var capacity, used, remaining, missing uint64
	m.locked(func() error {
		for _, dn := range m.mu.blocks.live() {
			capacity += dn.info.GetCapacity()
			used += dn.info.GetDfsUsed()
			remaining += dn.info.GetRemaining()
		}
		missing = uint64(m.mu.blocks.blocks.Len() - m.mu.blocks.withReplicas)
		return nil
	})
	return &pb.GetFsStatsResponseProto{Capacity: proto.Uint64(capacity), Used: proto.Uint64(used),
		Remaining: proto.Uint64(remaining), UnderReplicated: proto.Uint64(0), CorruptBlocks: proto.Uint64(0),
		MissingBlocks: proto.Uint64(missing)}, nil
}

func (m *Master) getServerDefaults(ctx context.Context, req *pb.GetServerDefaultsRequestProto) (*pb.GetServerDefaultsResponseProto, error) {
	return &pb.GetServerDefaultsResponseProto{ServerDefaults: &pb.FsServerDefaultsProto{
		BlockSize:        proto.Uint64(m.cfg.BlockSize),
		BytesPerChecksum: proto.Uint32(protocol.BytesPerChecksum),
		WritePacketSize:  proto.Uint32(64 << 10),
		Replication:      proto.Uint32(uint32(m.cfg.Replication)),
		FileBufferSize:   proto.Uint32(4096),
		ChecksumType:     pb.ChecksumTypeProto_CHECKSUM_CRC32C.Enum(),
	}}, nil
}

func (m *Master) renewLease(ctx context.Context, req *pb.RenewLeaseRequestProto) (*pb.RenewLeaseResponseProto, error) {
	m.locked(func() error { m.renewLeaseLocked(req.GetClientName()); return nil })
	return &pb.RenewLeaseResponseProto{}, nil
}

func (m *Master) getDatanodeReport(ctx context.Context, req *pb.GetDatanodeReportRequestProto) (*pb.GetDatanodeReportResponseProto, error) {
	resp := &pb.GetDatanodeReportResponseProto{}
	m.locked(func() error {
		for _, dn := range m.mu.blocks.nodes {
			switch req.GetType() {
			case pb.DatanodeReportTypeProto_LIVE:
				if dn.dead {
					continue
				}
			case pb.DatanodeReportTypeProto_DEAD:
				if !dn.dead {
					continue
				}
			case pb.DatanodeReportTypeProto_ALL:
			default:
				continue
			}
			info := dn.info.CloneVT()
			info.LastUpdate = proto.Uint64(uint64(dn.lastHeartbeat.UnixMilli()))
			info.NumBlocks = proto.Uint32(uint32(dn.blocks.Len()))
			info.AdminState = dn.admin.proto().Enum()
			resp.Di = append(resp.Di, info)
		}
		return nil
	})
	sortDatanodes(resp.Di)
	return resp, nil
}

// reportBadBlocks drops replicas a reader found corrupt and has their
// datanodes delete them.
func (m *Master) reportBadBlocks(ctx context.Context, req *pb.ReportBadBlocksRequestProto) (*pb.ReportBadBlocksResponseProto, error) {
	m.locked(func() error {
		for _, lb := range req.GetBlocks() {
			id := lb.GetB().GetBlockId()
			for _, loc := range lb.GetLocs() {
				uuid := loc.GetId().GetDatanodeUuid()
				dn := m.mu.blocks.nodes[uuid]
				if dn == nil {
					continue
				}
				// Never delete the last replica on a reader's word: a buggy
				// or hostile client must not be able to destroy data. Nor a
				// replica being written: a reader can race the writer.
				if len(m.mu.blocks.holders(id)) <= 1 || m.underConstructionLocked(id) {
					m.log.Warn("corrupt replica reported; keeping it, it is the last one", "block", id, "datanode", xferAddr(dn.info.GetId()))
					continue
				}
				m.log.Warn("corrupt replica reported; deleting it", "block", id, "datanode", xferAddr(dn.info.GetId()))
				m.mu.blocks.invalidateReplica(id, uuid)
			}
		}
		return nil
	})
	return &pb.ReportBadBlocksResponseProto{}, nil
}

func (m *Master) getPreferredBlockSize(ctx context.Context, req *pb.GetPreferredBlockSizeRequestProto) (*pb.GetPreferredBlockSizeResponseProto, error) {
	var bs uint64
	err := m.locked(func() error {
		n, err := m.mu.tree.Lookup(req.GetFilename())
		if err != nil {
			return err
		}
		bs = n.BlockSize()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.GetPreferredBlockSizeResponseProto{Bsize: proto.Uint64(bs)}, nil
}

func (m *Master) isFileClosed(ctx context.Context, req *pb.IsFileClosedRequestProto) (*pb.IsFileClosedResponseProto, error) {
	var closed bool
	err := m.locked(func() error {
		n, err := m.mu.tree.Lookup(req.GetSrc())
		if err != nil {
			return err
		}
		closed = !n.UnderConstruction()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.IsFileClosedResponseProto{Result: proto.Bool(closed)}, nil
}

// updateBlockForPipeline hands out a new generation stamp for a block being
// written, for the client to rebuild its pipeline with. The block keeps its
// stamp until updatePipeline commits the new one, so a client that only
// asks (colinmarc/hdfs does after every block) changes nothing.
func (m *Master) updateBlockForPipeline(ctx context.Context, req *pb.UpdateBlockForPipelineRequestProto) (*pb.UpdateBlockForPipelineResponseProto, error) {
	resp := &pb.UpdateBlockForPipelineResponseProto{}
	err := m.update(func() error {
		bi := m.mu.blocks.blocks.Ptr(req.GetBlock().GetBlockId())
		if bi == nil {
			return fmt.Errorf("%w: unknown block %d", protocol.ErrInvalidArgument, req.GetBlock().GetBlockId())
		}
		n := m.mu.tree.UnderConstruction(bi.fileID())
		if n == nil || n.Client() != req.GetClientName() {
			return fmt.Errorf("%w: block %d is not being written by %s", protocol.ErrNoLease, req.GetBlock().GetBlockId(), req.GetClientName())
		}
		gs := m.mu.tree.NextGenStamp()
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpBumpGenStamp, Block: &namespace.Block{ID: req.GetBlock().GetBlockId(), GenStamp: gs}}); err != nil {
			return err
		}
		m.renewLeaseLocked(req.GetClientName())
		b := *blockFrom(req.GetBlock())
		b.GenStamp = gs
		resp.Block = m.locatedBlock(b, 0, m.mu.blocks.locations(b.ID, callerIP(ctx), m.stale))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// updatePipeline commits a recovered pipeline: the block takes its new
// generation stamp, and the datanodes of the new pipeline are its
// replicas; replicas elsewhere (with the old stamp) are deleted.
func (m *Master) updatePipeline(ctx context.Context, req *pb.UpdatePipelineRequestProto) (*pb.UpdatePipelineResponseProto, error) {
	old, nb := req.GetOldBlock(), req.GetNewBlock()
	if old.GetBlockId() != nb.GetBlockId() {
		return nil, fmt.Errorf("%w: updatePipeline from block %d to block %d", protocol.ErrInvalidArgument, old.GetBlockId(), nb.GetBlockId())
	}
	err := m.update(func() error {
		bi := m.mu.blocks.blocks.Ptr(old.GetBlockId())
		if bi == nil {
			return fmt.Errorf("%w: unknown block %d", protocol.ErrInvalidArgument, old.GetBlockId())
		}
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpUpdatePipeline, FileID: bi.fileID(), Client: req.GetClientName(),
			Block: &namespace.Block{ID: nb.GetBlockId(), GenStamp: nb.GetGenerationStamp()}}); err != nil {
			return err
		}
		keep := map[string]bool{}
		for _, id := range req.GetNewNodes() {
			keep[id.GetDatanodeUuid()] = true
		}
		for _, dn := range m.mu.blocks.replicas(nb.GetBlockId()) {
			if !keep[dn.uuid] {
				m.mu.blocks.invalidateReplica(nb.GetBlockId(), dn.uuid)
			}
		}
		m.log.Info("pipeline recovered", "block", nb.GetBlockId(), "genStamp", nb.GetGenerationStamp(),
			"datanodes", len(keep), "client", req.GetClientName())
		b, _ := m.mu.blocks.block(nb.GetBlockId())
		for uuid := range keep {
			m.mu.blocks.addReplica(nb.GetBlockId(), bi, uuid, b.Len)
		}
		m.renewLeaseLocked(req.GetClientName())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.UpdatePipelineResponseProto{}, nil
}

// recoverLease closes a file under construction now, whoever holds it
// (hdfs debug recoverLease). It answers whether the file is closed.
func (m *Master) recoverLease(ctx context.Context, req *pb.RecoverLeaseRequestProto) (*pb.RecoverLeaseResponseProto, error) {
	err := m.update(func() error {
		held := m.mu.tree.WritingAt(req.GetSrc())
		if held == nil {
			if _, err := m.mu.tree.Lookup(req.GetSrc()); err != nil {
				return err
			}
			return nil // already closed
		}
		return m.recoverLeaseLocked(held)
	})
	if err != nil {
		return nil, err
	}
	return &pb.RecoverLeaseResponseProto{Result: proto.Bool(true)}, nil
}

// getAdditionalDatanode picks datanodes to replace failed ones in a
// writer's pipeline: placed like any replica, avoiding the pipeline's
// nodes and those the writer saw fail.
func (m *Master) getAdditionalDatanode(ctx context.Context, req *pb.GetAdditionalDatanodeRequestProto) (*pb.GetAdditionalDatanodeResponseProto, error) {
	resp := &pb.GetAdditionalDatanodeResponseProto{}
	err := m.locked(func() error {
		var existing []placement.Node
		var locs []*datanode
		for _, e := range req.GetExistings() {
			if dn := m.mu.blocks.nodes[e.GetId().GetDatanodeUuid()]; dn != nil {
				existing = append(existing, placementNode(dn, false))
				locs = append(locs, dn)
			}
		}
		exclude := map[string]bool{}
		for _, e := range req.GetExcludes() {
			exclude[e.GetId().GetDatanodeUuid()] = true
		}
		chosen := placement.Choose(m.placementNodesLocked(), placement.Request{N: int(req.GetNumAdditionalNodes()),
			Existing: existing, Exclude: exclude, BlockSize: int64(req.GetBlk().GetNumBytes())}, m.cfg.Rand)
		if len(chosen) == 0 {
			return fmt.Errorf("%w: no datanode to add to the pipeline of %s", protocol.ErrNoDatanodes, req.GetSrc())
		}
		m.mu.blocks.schedule(chosen, m.blockRoomLocked(req.GetBlk().GetBlockId()))
		for _, c := range chosen {
			locs = append(locs, m.mu.blocks.nodes[c.ID])
		}
		m.renewLeaseLocked(req.GetClientName())
		resp.Block = m.locatedBlock(*blockFrom(req.GetBlk()), 0, locs)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

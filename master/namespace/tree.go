// Package namespace is the master's file system tree as a deterministic
// state machine: every change is an Entry applied by Tree.Apply, the only
// function that mutates the tree. The master logs each entry durably and
// replays the log after a checkpoint on restart, which gives the same tree.
//
// A Tree is not safe for concurrent use: the master serializes all calls.
// Apply must stay deterministic: it may read only the entry and the tree,
// never the clock, the random source or the block map.
package namespace

import (
	"fmt"
	"io/fs"
	"iter"
	"slices"
	"sort"
	"strings"
	"unsafe"

	"github.com/godfs/godfs/master/idtable"
	"github.com/godfs/godfs/protocol"
)

// Inode is a file or a directory.
//
// It is 64 bytes, an allocation class of Go's, with a one-block file's
// block inside: besides its three pointers (name, parent, attrs) it keeps
// its id, times and block in 48 bits each, and permission, replication,
// kind and name length in one word. The name is a pointer and a length
// (names are at most MaxNameLen bytes) instead of a 16-byte string;
// owner, group and block size, which most inodes share with many others,
// are interned; and what most inodes do not have (a directory's children,
// the blocks of a file of more than one, the writing of a file under
// construction) hangs off the same pointer. A block whose id, stamp or
// length does not fit 48 bits is kept with the attrs, as a longer file's
// are.
type Inode struct {
	name   *byte
	Parent *Inode
	a      *attrs

	id           uint48
	mtime, atime uint48    // ms since the epoch
	one          [3]uint48 // the file's only block (id, stamp, length) when hasOne
	bits         uint32    // see the masks below
}

// uint48 is a 48-bit unsigned integer kept in 6 bytes with no padding.
type uint48 [3]uint16

func (u uint48) get() uint64 { return uint64(u[0]) | uint64(u[1])<<16 | uint64(u[2])<<32 }

func put48(v uint64) uint48 { return uint48{uint16(v), uint16(v >> 16), uint16(v >> 32)} }

const (
	max48 = 1<<48 - 1

	// MaxTime is the latest time (ms since the epoch) an inode keeps:
	// 48 bits, the year 10889.
	MaxTime = max48

	// Inode.bits: permission (0o1777: rwx for three and sticky), whether
	// it is a directory, whether one holds its block, replication (at most
	// 4095, above MaxReplication), name length.
	permMask       = 0o1777
	dirBit         = 1 << 10
	oneBit         = 1 << 11
	replShift      = 12
	replMask       = 1<<12 - 1
	nameShift      = 24
	maxReplication = replMask
)

var errReplication = fmt.Errorf("%w: replication above %d", protocol.ErrInvalidArgument, maxReplication)

// ID is the inode's id (HDFS's fileId).
func (n *Inode) ID() uint64 { return n.id.get() }

// IsDir reports whether the inode is a directory.
func (n *Inode) IsDir() bool { return n.bits&dirBit != 0 }

// Perm is the inode's permission bits (0o777 and sticky).
func (n *Inode) Perm() uint16 { return uint16(n.bits & permMask) }

// Replication is a file's wanted replica count.
func (n *Inode) Replication() uint16 { return uint16(n.bits >> replShift & replMask) }

// Mtime is the time of the last change, in ms since the epoch.
func (n *Inode) Mtime() int64 { return int64(n.mtime.get()) }

// Atime is the time of the last access, in ms since the epoch.
func (n *Inode) Atime() int64 { return int64(n.atime.get()) }

func (n *Inode) hasOne() bool { return n.bits&oneBit != 0 }

func (n *Inode) nameLen() int { return int(n.bits >> nameShift) }

func (n *Inode) setBits(mask, v uint32) { n.bits = n.bits&^mask | v&mask }

func (n *Inode) setPerm(p uint16) { n.setBits(permMask, uint32(p)) }

func (n *Inode) setReplication(r uint16) { n.setBits(replMask<<replShift, uint32(r)<<replShift) }

// setMtime and setAtime keep t, which Apply checked against MaxTime
// (times from the master's clock are in range).
func (n *Inode) setMtime(t int64) { n.mtime = put48(uint64(t)) }

func (n *Inode) setAtime(t int64) { n.atime = put48(uint64(t)) }

// validTime reports whether an inode can keep time t.
func validTime(t int64) bool { return t >= 0 && t <= MaxTime }

// fitsInline reports whether b can be kept in the inode.
func fitsInline(b Block) bool { return b.ID <= max48 && b.GenStamp <= max48 && b.Len <= max48 }

// attrs are the parts of an inode most inodes share with many others
// (owner, group, block size), shared by every inode with the same three,
// and the parts most inodes do not have; an inode with any of those has
// attrs of its own.
type attrs struct {
	user, group string
	blockSize   uint64 // files only
	w           *writing
	// blocks are a file's blocks when it has more than one.
	blocks *[]Block
	// kids are a directory's children. Every directory has them, if
	// empty.
	kids *children
}

// own reports whether attrs a belong to one inode rather than being shared.
func (a *attrs) own() bool { return a.w != nil || a.blocks != nil || a.kids != nil }

// writing is what the tree knows of a file under construction: the
// client holding the lease and, for a new file, the path it will appear
// at when complete (it is not in the tree until then) and whether it then
// replaces a file there.
type writing struct {
	client    string
	path      string
	overwrite bool
}

// Name is the inode's name in its directory ("" for the root).
func (n *Inode) Name() string { return unsafe.String(n.name, n.nameLen()) }

// setName names the inode with a copy of s: s is usually a piece of a
// path, all of which it would keep in memory.
func (n *Inode) setName(s string) { n.keepName(strings.Clone(s)) }

// keepName names the inode with s itself, at most MaxNameLen bytes
// (SplitPath and the snapshot reader see to it).
func (n *Inode) keepName(s string) {
	n.name = unsafe.StringData(s)
	n.setBits(0xff<<nameShift, uint32(len(s))<<nameShift)
}

// Owner is the inode's owning user.
func (n *Inode) Owner() string { return n.a.user }

// Group is the inode's group.
func (n *Inode) Group() string { return n.a.group }

// BlockSize is the file's block size.
func (n *Inode) BlockSize() uint64 { return n.a.blockSize }

// Client is the client writing the file, or "".
func (n *Inode) Client() string {
	if n.a.w == nil {
		return ""
	}
	return n.a.w.client
}

// UCPath is the path a new file being written will appear at, or "".
func (n *Inode) UCPath() string {
	if n.a.w == nil {
		return ""
	}
	return n.a.w.path
}

// BlockIndex is the position of block id among the file's blocks, or -1.
// Block ids only grow, so a file's blocks are in id order: a file of
// thousands of blocks costs a binary search, not a scan.
func (n *Inode) BlockIndex(id uint64) int {
	i := sort.Search(n.NumBlocks(), func(i int) bool { return n.Block(i).ID >= id })
	if i < n.NumBlocks() && n.Block(i).ID == id {
		return i
	}
	return -1
}

// NumBlocks is how many blocks the file has.
func (n *Inode) NumBlocks() int {
	switch {
	case n.a.blocks != nil:
		return len(*n.a.blocks)
	case n.hasOne():
		return 1
	}
	return 0
}

// Block is the file's block i.
func (n *Inode) Block(i int) Block {
	if n.a.blocks != nil {
		return (*n.a.blocks)[i]
	}
	if i != 0 || !n.hasOne() {
		panic(fmt.Sprintf("inode %d: block %d of %d", n.ID(), i, n.NumBlocks()))
	}
	return Block{ID: n.one[0].get(), GenStamp: n.one[1].get(), Len: n.one[2].get()}
}

// Blocks are a file's blocks in order: for a file of more than one, the
// file's own slice (read it, do not keep it past the master's lock); for
// one, a new slice.
func (n *Inode) Blocks() []Block {
	switch {
	case n.a.blocks != nil:
		return *n.a.blocks
	case n.hasOne():
		return []Block{n.Block(0)}
	}
	return nil
}

// LastBlock is the file's last block, if it has blocks.
func (n *Inode) LastBlock() (Block, bool) {
	if k := n.NumBlocks(); k > 0 {
		return n.Block(k - 1), true
	}
	return Block{}, false
}

// Len is the file's length: the sum of its blocks.
func (n *Inode) Len() uint64 {
	var l uint64
	for i := range n.NumBlocks() {
		l += n.Block(i).Len
	}
	return l
}

// UnderConstruction reports whether a client is writing the file.
func (n *Inode) UnderConstruction() bool { return n.a.w != nil }

// Path returns the absolute path of an inode in the tree.
func (n *Inode) Path() string {
	if p := n.UCPath(); p != "" {
		return p
	}
	if n.Parent == nil {
		return "/"
	}
	var parts []string
	for c := n; c.Parent != nil; c = c.Parent {
		parts = append(parts, c.Name())
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return Join(parts)
}

// ChildrenAfter returns, in order, up to max children of a directory
// whose names sort after name (from the first for ""), and how many more
// there are after those.
func (n *Inode) ChildrenAfter(name string, max int) (kids []*Inode, more int) {
	if n.a.kids == nil {
		return nil, 0
	}
	return n.a.kids.after(name, max)
}

// Children yields a directory's children in name order. The tree must not
// change meanwhile.
func (n *Inode) Children() iter.Seq[*Inode] {
	if n.a.kids == nil {
		return func(func(*Inode) bool) {}
	}
	return n.a.kids.all()
}

// NumChildren is how many children a directory has.
func (n *Inode) NumChildren() int {
	if n.a.kids == nil {
		return 0
	}
	return n.a.kids.n
}

// child returns the child called name.
func (n *Inode) child(name string) (*Inode, bool) {
	if n.a.kids == nil {
		return nil, false
	}
	return n.a.kids.get(name)
}

// putChild adds c to directory n under c.Name(), replacing a child of
// that name.
func (n *Inode) putChild(c *Inode) { n.a.kids.put(c) }

// removeChild drops the child called name.
func (n *Inode) removeChild(name string) { n.a.kids.remove(name) }

// Result is what Apply reports besides success.
type Result struct {
	// Inode is the inode the entry created or changed, when there is one.
	Inode *Inode
	// Freed lists blocks no file refers to any more; the master deletes
	// their replicas.
	Freed []Block
	// Resized is the block whose length the entry changed, if any: the
	// master counts each datanode's bytes from the namespace's lengths.
	Resized Resize
}

// Resize is a change of a block's length; an ID of 0 is none.
type Resize struct {
	ID    uint64
	Delta int64
}

// Tree is the namespace: the directory tree, the files under construction
// and the id allocators.
type Tree struct {
	root *Inode
	// uc holds files under construction by id: new files (not yet in the
	// tree) and appended ones (in the tree).
	uc     map[uint64]*Inode
	ucPath map[string]*Inode     // new files under construction by target path
	files  idtable.Table[*Inode] // every file by id, complete or not
	attrs  map[attrs]*attrs      // the shared attrs

	lastIndex    uint64 // index of the last applied entry
	nextInodeID  uint64
	nextBlockID  uint64
	nextGenStamp uint64
	// reservedBlockID is the highest OpReserveBlockIDs replayed or applied
	// since the tree was loaded; snapshots do not keep it.
	reservedBlockID uint64
}

// First ids, as HDFS numbers them.
const (
	RootInodeID   = 16385
	FirstBlockID  = 1 << 30
	FirstGenStamp = 1001
)

// MaxInodeID is the highest id a file can have: the master's block map
// keeps a block's file id in 48 bits (2.8e14 ids, 9 years of a million
// creates a second).
const MaxInodeID = 1<<48 - 1

// New returns an empty tree with a root directory owned by owner.
func New(owner, group string, now int64) *Tree {
	t := newTree()
	t.root = t.newInode(&Entry{FileID: RootInodeID, Perm: 0o755, Owner: owner, Group: group, Time: now}, "", nil, true)
	return t
}

func newTree() *Tree {
	return &Tree{
		uc:           map[uint64]*Inode{},
		ucPath:       map[string]*Inode{},
		attrs:        map[attrs]*attrs{},
		nextInodeID:  RootInodeID + 1,
		nextBlockID:  FirstBlockID,
		nextGenStamp: FirstGenStamp,
	}
}

// setAttrs gives n the attrs a: a shared copy, or its own (see attrs).
func (t *Tree) setAttrs(n *Inode, a attrs) {
	if a.own() {
		n.a = &a
		return
	}
	if p := t.attrs[a]; p != nil {
		n.a = p
		return
	}
	p := &a
	t.attrs[a] = p
	n.a = p
}

// setBlocks makes bs file n's blocks: one is kept in the inode, more
// (or one that does not fit) in attrs of its own.
func (t *Tree) setBlocks(n *Inode, bs []Block) {
	if len(bs) > 1 || len(bs) == 1 && !fitsInline(bs[0]) {
		n.setBits(oneBit, 0)
		if n.a.blocks != nil {
			*n.a.blocks = bs
			return
		}
		a := *n.a
		a.blocks = &bs
		t.setAttrs(n, a)
		return
	}
	n.one = [3]uint48{}
	n.setBits(oneBit, 0)
	if len(bs) == 1 {
		n.one = packBlock(bs[0])
		n.setBits(oneBit, oneBit)
	}
	if n.a.blocks != nil {
		a := *n.a
		a.blocks = nil
		t.setAttrs(n, a)
	}
}

// setBlock replaces file n's block i with b.
func (t *Tree) setBlock(n *Inode, i int, b Block) {
	switch {
	case n.a.blocks != nil:
		(*n.a.blocks)[i] = b
	case fitsInline(b):
		n.one = packBlock(b)
	default:
		t.setBlocks(n, []Block{b})
	}
}

func packBlock(b Block) [3]uint48 { return [3]uint48{put48(b.ID), put48(b.GenStamp), put48(b.Len)} }

// updateBlock gives file n's block i the length length and, if gs is
// newer than its stamp, the stamp gs, and says how the length changed.
func (t *Tree) updateBlock(n *Inode, i int, length, gs uint64) Resize {
	b := n.Block(i)
	r := Resize{ID: b.ID, Delta: int64(length) - int64(b.Len)}
	b.Len, b.GenStamp = length, max(b.GenStamp, gs)
	t.setBlock(n, i, b)
	return r
}

// setWriting marks file n as being written (w) or not (nil).
func (t *Tree) setWriting(n *Inode, w *writing) {
	a := *n.a
	a.w = w
	t.setAttrs(n, a)
}

// sawGenStamp keeps the generation-stamp allocator past gs, a stamp an
// entry handed out or recorded.
func (t *Tree) sawGenStamp(gs uint64) {
	if gs >= t.nextGenStamp {
		t.nextGenStamp = gs + 1
	}
}

// LastIndex is the index of the last entry applied.
func (t *Tree) LastIndex() uint64 { return t.lastIndex }

// NextInodeID, NextBlockID and NextGenStamp are the ids the next entries
// should carry. The caller puts them in the entry; Apply advances them.
func (t *Tree) NextInodeID() uint64  { return t.nextInodeID }
func (t *Tree) NextBlockID() uint64  { return t.nextBlockID }
func (t *Tree) NextGenStamp() uint64 { return t.nextGenStamp }

// ReservedBlockIDs is the end of the block ids reserved since the tree was
// loaded (0 if none). A master hands out ids below it without waiting for
// their addBlock entries to be durable; after a crash some of those may be
// on datanodes and in no log, so a master that loaded a tree skips past
// them before it hands out any (see OpReserveBlockIDs).
func (t *Tree) ReservedBlockIDs() uint64 { return t.reservedBlockID }

// Root returns the root directory.
func (t *Tree) Root() *Inode { return t.root }

// UnderConstruction returns the file under construction with id, or nil.
func (t *Tree) UnderConstruction(id uint64) *Inode { return t.uc[id] }

// WritingAt returns the file being written at path p (a new file not yet
// in the tree, or one in the tree being appended to), or nil.
func (t *Tree) WritingAt(p string) *Inode {
	if n := t.ucPath[p]; n != nil {
		return n
	}
	if n, err := t.Lookup(p); err == nil && n.UnderConstruction() {
		return n
	}
	return nil
}

// FilesUnderConstruction calls fn for each file being written.
func (t *Tree) FilesUnderConstruction(fn func(*Inode)) {
	for _, n := range t.uc {
		fn(n)
	}
}

// Lookup resolves an absolute path in the tree. A new file being written
// is not found until it completes or is first flushed (hflush).
func (t *Tree) Lookup(p string) (*Inode, error) {
	var space [16]string
	parts, err := appendPath(space[:0], p)
	if err != nil {
		return nil, err
	}
	return t.lookup(parts)
}

func (t *Tree) lookup(parts []string) (*Inode, error) {
	n := t.root
	for i, c := range parts {
		if !n.IsDir() {
			return nil, &fs.PathError{Op: "lookup", Path: Join(parts[:i]), Err: protocol.ErrNotDir}
		}
		child, ok := n.child(c)
		if !ok {
			return nil, &fs.PathError{Op: "lookup", Path: Join(parts), Err: fs.ErrNotExist}
		}
		n = child
	}
	return n, nil
}

// lookupParent returns the directory that holds the last component.
func (t *Tree) lookupParent(op string, parts []string) (*Inode, error) {
	if len(parts) == 0 {
		return nil, &fs.PathError{Op: op, Path: "/", Err: protocol.ErrInvalidPath}
	}
	dir, err := t.lookup(parts[:len(parts)-1])
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: Join(parts), Err: unwrapPathErr(err)}
	}
	if !dir.IsDir() {
		return nil, &fs.PathError{Op: op, Path: Join(parts), Err: protocol.ErrNotDir}
	}
	return dir, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

// Apply applies one entry. On error the tree is unchanged. Entries must be
// applied in index order.
func (t *Tree) Apply(e *Entry) (Result, error) {
	res, err := t.apply(e)
	if err == nil {
		t.lastIndex = e.Index
	}
	return res, err
}

func (t *Tree) apply(e *Entry) (Result, error) {
	switch e.Type {
	case OpMkdir:
		return t.mkdir(e)
	case OpCreate:
		return t.create(e)
	case OpAddBlock:
		return t.addBlock(e)
	case OpAbandonBlock:
		return t.abandonBlock(e)
	case OpComplete:
		return t.complete(e)
	case OpDelete:
		return t.delete(e)
	case OpRename:
		return t.rename(e)
	case OpSetPermission, OpSetOwner, OpSetReplication, OpSetTimes:
		return t.setAttr(e)
	case OpAbandonFile:
		return t.abandonFile(e)
	case OpAppend:
		return t.append(e)
	case OpTruncate:
		return t.truncate(e)
	case OpReportBlock:
		return t.reportBlock(e)
	case OpUpdatePipeline:
		return t.updatePipeline(e)
	case OpFsync:
		return t.fsync(e)
	case OpBumpGenStamp:
		t.sawGenStamp(e.Block.GenStamp)
		return Result{}, nil
	case OpReserveBlockIDs:
		if e.Block != nil && e.Block.ID > t.nextBlockID {
			t.nextBlockID = e.Block.ID
		}
		t.reservedBlockID = max(t.reservedBlockID, e.Length)
		return Result{}, nil
	}
	return Result{}, fmt.Errorf("apply entry %d: unknown op %s", e.Index, e.Type)
}

func (t *Tree) newInode(e *Entry, name string, parent *Inode, dir bool) *Inode {
	n := &Inode{Parent: parent, id: put48(e.FileID)}
	if dir {
		n.bits = dirBit
	}
	n.setPerm(e.Perm)
	n.setMtime(e.Time)
	n.setAtime(e.Time)
	n.setName(name)
	a := attrs{user: e.Owner, group: e.Group}
	if dir {
		a.kids = new(children)
	} else {
		a.blockSize = e.BlockSize
	}
	t.setAttrs(n, a)
	if !dir {
		t.files.Put(n.ID(), n)
	}
	if n.ID() >= t.nextInodeID {
		t.nextInodeID = n.ID() + 1
	}
	return n
}

// mkdir creates a directory; with Parents, missing ancestors too, and an
// existing directory is not an error. Ancestors get consecutive ids from
// FileID on.
func (t *Tree) mkdir(e *Entry) (Result, error) {
	parts, err := SplitPath(e.Path)
	if err != nil {
		return Result{}, err
	}
	if len(parts) == 0 {
		if e.Parents {
			return Result{Inode: t.root}, nil
		}
		return Result{}, &fs.PathError{Op: "mkdir", Path: "/", Err: fs.ErrExist}
	}
	// Check the whole path first so a failure changes nothing.
	n := t.root
	missing := -1
	for i, c := range parts {
		child, ok := n.child(c)
		if !ok {
			missing = i
			break
		}
		if !child.IsDir() {
			return Result{}, &fs.PathError{Op: "mkdir", Path: Join(parts[:i+1]), Err: protocol.ErrNotDir}
		}
		n = child
	}
	if missing < 0 {
		if e.Parents {
			return Result{Inode: n}, nil
		}
		return Result{}, &fs.PathError{Op: "mkdir", Path: e.Path, Err: fs.ErrExist}
	}
	if missing < len(parts)-1 && !e.Parents {
		return Result{}, &fs.PathError{Op: "mkdir", Path: Join(parts[:missing+1]), Err: fs.ErrNotExist}
	}
	id := e.FileID
	for _, c := range parts[missing:] {
		child := t.newInode(&Entry{FileID: id, Perm: e.Perm, Owner: e.Owner, Group: e.Group, Time: e.Time}, c, n, true)
		n.putChild(child)
		n.setMtime(e.Time)
		n = child
		id++
	}
	return Result{Inode: n}, nil
}

func (t *Tree) create(e *Entry) (Result, error) {
	parts, err := SplitPath(e.Path)
	if err != nil {
		return Result{}, err
	}
	if e.Client == "" { // a file being written is one with a writer
		return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: fmt.Errorf("%w: no client", protocol.ErrInvalidArgument)}
	}
	if len(parts) == 0 {
		return Result{}, &fs.PathError{Op: "create", Path: "/", Err: protocol.ErrIsDir}
	}
	if e.Replication > maxReplication {
		return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: errReplication}
	}
	if e.FileID > MaxInodeID {
		return Result{}, &fs.PathError{Op: "create", Path: e.Path,
			Err: fmt.Errorf("%w: file id %d is beyond the last the master can track (%d)", protocol.ErrInvalidArgument, e.FileID, uint64(MaxInodeID))}
	}
	if other, ok := t.ucPath[e.Path]; ok {
		return Result{}, &fs.PathError{Op: "create", Path: e.Path,
			Err: fmt.Errorf("%w (%s)", protocol.ErrLeaseHeld, other.Client())}
	}
	dir, err := t.lookup(parts[:len(parts)-1])
	if err != nil {
		err = unwrapPathErr(err)
		if !e.Parents || err != fs.ErrNotExist {
			return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: err}
		}
		// Create the missing parents first; they get ids after the file's.
		mk := &Entry{Type: OpMkdir, Path: Join(parts[:len(parts)-1]), FileID: e.FileID + 1,
			Perm: 0o755, Owner: e.Owner, Group: e.Group, Time: e.Time, Parents: true}
		r, err := t.mkdir(mk)
		if err != nil {
			return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: unwrapPathErr(err)}
		}
		dir = r.Inode
	}
	if !dir.IsDir() {
		return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: protocol.ErrNotDir}
	}
	if old, ok := dir.child(parts[len(parts)-1]); ok {
		switch {
		case old.IsDir():
			return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: protocol.ErrIsDir}
		case old.UnderConstruction():
			return Result{}, &fs.PathError{Op: "create", Path: e.Path,
				Err: fmt.Errorf("%w (%s)", protocol.ErrLeaseHeld, old.Client())}
		case !e.Overwrite:
			return Result{}, &fs.PathError{Op: "create", Path: e.Path, Err: fs.ErrExist}
		}
	}
	n := t.newInode(e, parts[len(parts)-1], nil, false)
	n.setReplication(e.Replication)
	t.setWriting(n, &writing{client: e.Client, path: e.Path, overwrite: e.Overwrite})
	t.uc[n.ID()] = n
	t.ucPath[e.Path] = n
	return Result{Inode: n}, nil
}

// writing returns the file under construction e names, checking the lease.
func (t *Tree) writing(op string, e *Entry) (*Inode, error) {
	n, ok := t.uc[e.FileID]
	if !ok {
		return nil, &fs.PathError{Op: op, Path: e.Path, Err: protocol.ErrNoLease}
	}
	if e.Client != "" && n.Client() != e.Client {
		return nil, &fs.PathError{Op: op, Path: n.Path(),
			Err: fmt.Errorf("%w: held by %s, not %s", protocol.ErrNoLease, n.Client(), e.Client)}
	}
	return n, nil
}

// checkLast checks that b, if given, is the file's last block.
func checkLast(op string, n *Inode, b *Block) error {
	if last, ok := n.LastBlock(); b != nil && (!ok || last.ID != b.ID) {
		return &fs.PathError{Op: op, Path: n.Path(),
			Err: fmt.Errorf("%w: block %d is not the file's last block", protocol.ErrInvalidArgument, b.ID)}
	}
	return nil
}

// commitLast records the length of the file's last block from b, which
// checkLast approved.
func (t *Tree) commitLast(n *Inode, b *Block) Resize {
	if b == nil {
		return Resize{}
	}
	return t.updateBlock(n, n.NumBlocks()-1, b.Len, b.GenStamp)
}

func (t *Tree) addBlock(e *Entry) (Result, error) {
	n, err := t.writing("addBlock", e)
	if err != nil {
		return Result{}, err
	}
	if err := checkLast("addBlock", n, e.Previous); err != nil {
		return Result{}, err
	}
	resized := t.commitLast(n, e.Previous)
	t.setBlocks(n, append(n.Blocks(), *e.Block))
	if e.Block.ID >= t.nextBlockID {
		t.nextBlockID = e.Block.ID + 1
	}
	t.sawGenStamp(e.Block.GenStamp)
	return Result{Inode: n, Resized: resized}, nil
}

func (t *Tree) abandonBlock(e *Entry) (Result, error) {
	n, err := t.writing("abandonBlock", e)
	if err != nil {
		return Result{}, err
	}
	bs := n.Blocks()
	if len(bs) == 0 || bs[len(bs)-1].ID != e.Block.ID {
		return Result{Inode: n}, nil // already gone: abandoning is idempotent
	}
	b := bs[len(bs)-1]
	t.setBlocks(n, bs[:len(bs)-1])
	return Result{Inode: n, Freed: []Block{b}}, nil
}

func (t *Tree) complete(e *Entry) (Result, error) {
	n, err := t.writing("complete", e)
	if err != nil {
		return Result{}, err
	}
	if err := checkLast("complete", n, e.Previous); err != nil {
		return Result{}, err
	}
	var res Result
	if n.UCPath() != "" { // a new file: link it into the tree now
		parts, _ := SplitPath(n.UCPath())
		dir, err := t.lookupParent("complete", parts)
		if err != nil {
			return Result{}, err
		}
		name := parts[len(parts)-1]
		if old, ok := dir.child(name); ok {
			if old.IsDir() || old.UnderConstruction() || !n.a.w.overwrite {
				return Result{}, &fs.PathError{Op: "complete", Path: n.UCPath(), Err: fs.ErrExist}
			}
			res.Freed = old.Blocks()
			t.files.Delete(old.ID())
		}
		n.Parent = dir
		n.setName(name)
		dir.putChild(n)
		dir.setMtime(e.Time)
		delete(t.ucPath, n.UCPath())
	}
	res.Resized = t.commitLast(n, e.Previous)
	t.setWriting(n, nil)
	n.setMtime(e.Time)
	delete(t.uc, n.ID())
	res.Inode = n
	return res, nil
}

// abandonFile drops a file under construction whose writer is gone. A new
// file disappears with its blocks; an appended file keeps the blocks whose
// length is known and is closed.
func (t *Tree) abandonFile(e *Entry) (Result, error) {
	n, ok := t.uc[e.FileID]
	if !ok {
		return Result{}, nil
	}
	delete(t.uc, n.ID())
	if n.UCPath() != "" {
		delete(t.ucPath, n.UCPath())
		t.files.Delete(n.ID())
		return Result{Freed: n.Blocks()}, nil
	}
	bs := n.Blocks()
	keep := len(bs)
	for keep > 0 && bs[keep-1].Len == 0 {
		keep--
	}
	freed := slices.Clone(bs[keep:])
	slices.Reverse(freed) // last first, as they were dropped
	t.setBlocks(n, bs[:keep])
	t.setWriting(n, nil)
	n.setMtime(e.Time)
	return Result{Inode: n, Freed: freed}, nil
}

// reportBlock sets the length of a block of a file under construction (from
// what the datanodes hold, when the writer vanished).
func (t *Tree) reportBlock(e *Entry) (Result, error) {
	n, ok := t.uc[e.FileID]
	if !ok {
		return Result{}, nil
	}
	var resized Resize
	if i := n.BlockIndex(e.Block.ID); i >= 0 {
		resized = t.updateBlock(n, i, e.Block.Len, e.Block.GenStamp)
	}
	t.sawGenStamp(e.Block.GenStamp)
	return Result{Inode: n, Resized: resized}, nil
}

func (t *Tree) append(e *Entry) (Result, error) {
	n, err := t.Lookup(e.Path)
	if err != nil {
		return Result{}, err
	}
	if e.Client == "" {
		return Result{}, &fs.PathError{Op: "append", Path: e.Path, Err: fmt.Errorf("%w: no client", protocol.ErrInvalidArgument)}
	}
	switch {
	case n.IsDir():
		return Result{}, &fs.PathError{Op: "append", Path: e.Path, Err: protocol.ErrIsDir}
	case n.UnderConstruction():
		return Result{}, &fs.PathError{Op: "append", Path: e.Path,
			Err: fmt.Errorf("%w (%s)", protocol.ErrLeaseHeld, n.Client())}
	}
	t.setWriting(n, &writing{client: e.Client})
	t.uc[n.ID()] = n
	return Result{Inode: n}, nil
}

// collect appends the blocks of a subtree and forgets its files under
// construction.
func (t *Tree) collect(n *Inode, out []Block) []Block {
	if n.IsDir() {
		for c := range n.Children() {
			out = t.collect(c, out)
		}
		return out
	}
	delete(t.uc, n.ID())
	t.files.Delete(n.ID())
	return append(out, n.Blocks()...)
}

func (t *Tree) delete(e *Entry) (Result, error) {
	parts, err := SplitPath(e.Path)
	if err != nil {
		return Result{}, err
	}
	if len(parts) == 0 {
		return Result{}, &fs.PathError{Op: "delete", Path: "/", Err: fs.ErrPermission}
	}
	n, err := t.lookup(parts)
	if err != nil {
		return Result{}, err
	}
	if n.IsDir() && n.NumChildren() > 0 && !e.Recursive {
		return Result{}, &fs.PathError{Op: "delete", Path: e.Path, Err: protocol.ErrNotEmpty}
	}
	n.Parent.removeChild(n.Name())
	n.Parent.setMtime(e.Time)
	return Result{Inode: n, Freed: t.collect(n, nil)}, nil
}

// rename moves Path to Dst with rename2 semantics: Dst's parent must exist;
// an existing Dst is an error unless Overwrite, and then it must be a file
// or an empty directory of the same kind.
func (t *Tree) rename(e *Entry) (Result, error) {
	src, err := SplitPath(e.Path)
	if err != nil {
		return Result{}, err
	}
	dst, err := SplitPath(e.Dst)
	if err != nil {
		return Result{}, err
	}
	if len(src) == 0 || len(dst) == 0 {
		return Result{}, &fs.PathError{Op: "rename", Path: e.Path, Err: protocol.ErrInvalidPath}
	}
	n, err := t.lookup(src)
	if err != nil {
		return Result{}, err
	}
	if n.UnderConstruction() {
		return Result{}, &fs.PathError{Op: "rename", Path: e.Path,
			Err: fmt.Errorf("%w (%s)", protocol.ErrLeaseHeld, n.Client())}
	}
	if e.Path == e.Dst {
		return Result{Inode: n}, nil
	}
	if len(dst) > len(src) && Join(dst[:len(src)]) == e.Path {
		return Result{}, &fs.PathError{Op: "rename", Path: e.Dst,
			Err: fmt.Errorf("%w: cannot move a directory into itself", protocol.ErrInvalidPath)}
	}
	dir, err := t.lookupParent("rename", dst)
	if err != nil {
		return Result{}, err
	}
	name := dst[len(dst)-1]
	var res Result
	if old, ok := dir.child(name); ok {
		switch {
		case !e.Overwrite:
			return Result{}, &fs.PathError{Op: "rename", Path: e.Dst, Err: fs.ErrExist}
		case old.IsDir() != n.IsDir():
			return Result{}, &fs.PathError{Op: "rename", Path: e.Dst, Err: fs.ErrExist}
		case old.IsDir() && old.NumChildren() > 0:
			return Result{}, &fs.PathError{Op: "rename", Path: e.Dst, Err: protocol.ErrNotEmpty}
		case old.UnderConstruction():
			return Result{}, &fs.PathError{Op: "rename", Path: e.Dst,
				Err: fmt.Errorf("%w (%s)", protocol.ErrLeaseHeld, old.Client())}
		}
		res.Freed = t.collect(old, nil)
	}
	n.Parent.removeChild(n.Name())
	n.Parent.setMtime(e.Time)
	n.setName(name)
	n.Parent = dir
	dir.putChild(n)
	dir.setMtime(e.Time)
	res.Inode = n
	return res, nil
}

func (t *Tree) setAttr(e *Entry) (Result, error) {
	n, err := t.Lookup(e.Path)
	if err != nil {
		return Result{}, err
	}
	switch e.Type {
	case OpSetPermission:
		n.setPerm(e.Perm & 0o1777)
	case OpSetOwner:
		user, group := n.Owner(), n.Group()
		if e.Owner != "" {
			user = e.Owner
		}
		if e.Group != "" {
			group = e.Group
		}
		a := *n.a
		a.user, a.group = user, group
		t.setAttrs(n, a)
	case OpSetReplication:
		if n.IsDir() {
			return Result{}, &fs.PathError{Op: "setReplication", Path: e.Path, Err: protocol.ErrIsDir}
		}
		if e.Replication > maxReplication {
			return Result{}, &fs.PathError{Op: "setReplication", Path: e.Path, Err: errReplication}
		}
		n.setReplication(e.Replication)
	case OpSetTimes:
		if e.Time > MaxTime || e.Atime > MaxTime {
			return Result{}, &fs.PathError{Op: "setTimes", Path: e.Path,
				Err: fmt.Errorf("%w: a time past %d ms since the epoch", protocol.ErrInvalidArgument, int64(MaxTime))}
		}
		if e.Time >= 0 {
			n.setMtime(e.Time)
		}
		if e.Atime >= 0 {
			n.setAtime(e.Atime)
		}
	}
	return Result{Inode: n}, nil
}

// truncate cuts a file to Length. Blocks past it go; a block Length falls
// inside is cut and takes the new generation stamp in Block.
func (t *Tree) truncate(e *Entry) (Result, error) {
	n, err := t.Lookup(e.Path)
	if err != nil {
		return Result{}, err
	}
	if n.IsDir() {
		return Result{}, &fs.PathError{Op: "truncate", Path: e.Path, Err: protocol.ErrIsDir}
	}
	if n.UnderConstruction() {
		return Result{}, &fs.PathError{Op: "truncate", Path: e.Path,
			Err: fmt.Errorf("%w (%s)", protocol.ErrLeaseHeld, n.Client())}
	}
	if e.Length > n.Len() {
		return Result{}, &fs.PathError{Op: "truncate", Path: e.Path,
			Err: fmt.Errorf("%w: cannot truncate to %d, file is %d bytes", protocol.ErrInvalidArgument, e.Length, n.Len())}
	}
	bs := n.Blocks()
	var off uint64
	var resized Resize
	keep := 0
	for keep < len(bs) && off < e.Length {
		off += bs[keep].Len
		keep++
	}
	if off != e.Length {
		// Inside a block: it keeps its first bytes under a new generation
		// stamp (the datanodes cut their replicas to match).
		if e.Block == nil || e.Block.GenStamp <= bs[keep-1].GenStamp {
			return Result{}, &fs.PathError{Op: "truncate", Path: e.Path,
				Err: fmt.Errorf("%w: truncating inside a block needs a new generation stamp", protocol.ErrInvalidArgument)}
		}
	}
	freed := slices.Clone(bs[keep:])
	t.setBlocks(n, bs[:keep])
	if off != e.Length {
		resized = t.updateBlock(n, keep-1, bs[keep-1].Len-(off-e.Length), e.Block.GenStamp)
		t.sawGenStamp(e.Block.GenStamp)
	}
	n.setMtime(e.Time)
	return Result{Inode: n, Freed: freed, Resized: resized}, nil
}

// Files calls fn for every file: those in the tree depth-first in name
// order (the order a checkpoint loads them in, so memory is visited in
// sequence, several times faster than a map's order at millions of
// files), then new files under construction. fn must not change the tree.
func (t *Tree) Files(fn func(*Inode)) {
	var walk func(d *Inode)
	walk = func(d *Inode) {
		for c := range d.Children() {
			if c.IsDir() {
				walk(c)
			} else {
				fn(c)
			}
		}
	}
	walk(t.root)
	for _, n := range t.ucPath {
		fn(n)
	}
}

// File returns the file with id, complete or under construction, or nil.
func (t *Tree) File(id uint64) *Inode { return t.files.Get(id) }

// Block returns block id of the file with id fileID, if it has it.
func (t *Tree) Block(fileID, id uint64) (Block, bool) {
	if f := t.files.Get(fileID); f != nil {
		if i := f.BlockIndex(id); i >= 0 {
			return f.Block(i), true
		}
	}
	return Block{}, false
}

// NumFiles is the number of files, complete or not.
func (t *Tree) NumFiles() int { return t.files.Len() }

// updatePipeline moves the last block of a file being written to a new
// generation stamp, after the writer rebuilt its pipeline.
func (t *Tree) updatePipeline(e *Entry) (Result, error) {
	n, err := t.writing("updatePipeline", e)
	if err != nil {
		return Result{}, err
	}
	if err := checkLast("updatePipeline", n, e.Block); err != nil {
		return Result{}, err
	}
	last, _ := n.LastBlock()
	if e.Block.GenStamp <= last.GenStamp {
		return Result{}, &fs.PathError{Op: "updatePipeline", Path: n.Path(),
			Err: fmt.Errorf("%w: generation stamp %d is not newer than %d", protocol.ErrInvalidArgument, e.Block.GenStamp, last.GenStamp)}
	}
	t.updateBlock(n, n.NumBlocks()-1, last.Len, e.Block.GenStamp)
	t.sawGenStamp(e.Block.GenStamp)
	return Result{Inode: n}, nil
}

// fsync records how much of a file being written readers may see (hflush).
// A new file appears in the tree at its path, still being written, if the
// path is free; it is then read like any file, up to that length.
func (t *Tree) fsync(e *Entry) (Result, error) {
	n, err := t.writing("fsync", e)
	if err != nil {
		return Result{}, err
	}
	var resized Resize
	if last, ok := n.LastBlock(); e.Block != nil && ok && last.ID == e.Block.ID {
		resized = t.updateBlock(n, n.NumBlocks()-1, e.Block.Len, 0)
	}
	if n.UCPath() == "" {
		return Result{Inode: n, Resized: resized}, nil
	}
	parts, _ := SplitPath(n.UCPath())
	dir, err := t.lookupParent("fsync", parts)
	if err != nil {
		return Result{Inode: n, Resized: resized}, nil // stays invisible; complete reports the problem
	}
	name := parts[len(parts)-1]
	if _, taken := dir.child(name); taken {
		return Result{Inode: n, Resized: resized}, nil // an overwrite: the old file stays until complete
	}
	n.Parent = dir
	n.setName(name)
	dir.putChild(n)
	dir.setMtime(e.Time)
	delete(t.ucPath, n.UCPath())
	n.a.w.path = ""
	return Result{Inode: n, Resized: resized}, nil
}

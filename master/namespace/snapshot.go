package namespace

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"unsafe"
)

// The snapshot is a compact binary stream: a magic string, a header of
// uvarints, one record per inode (parents before children, then new files
// under construction), an end marker and a CRC32C of everything before
// it, so a damaged checkpoint is detected rather than loaded. Version 3
// adds the number of files to the header (checked against the files
// read); version 2 snapshots still load.
const (
	snapshotMagic   = "GODFSNS3"
	snapshotMagicV2 = "GODFSNS2"
)

// Record kinds and flags.
const (
	recDir         = 1 << 0
	recUC          = 1 << 1 // under construction: Client follows
	recUCPath      = 1 << 2 // a new file not yet in the tree: UCPath follows
	recUCOverwrite = 1 << 3
	recEnd         = 0xff
)

var snapshotCRC = crc32.MakeTable(crc32.Castagnoli)

type snapshotWriter struct {
	w   *bufio.Writer
	crc hash.Hash32
	buf []byte
}

func (sw *snapshotWriter) uvarint(v uint64) { sw.buf = binary.AppendUvarint(sw.buf, v) }
func (sw *snapshotWriter) varint(v int64)   { sw.buf = binary.AppendVarint(sw.buf, v) }
func (sw *snapshotWriter) str(s string) {
	sw.uvarint(uint64(len(s)))
	sw.buf = append(sw.buf, s...)
}

// flush writes the buffered record.
func (sw *snapshotWriter) flush() error {
	sw.crc.Write(sw.buf)
	_, err := sw.w.Write(sw.buf)
	sw.buf = sw.buf[:0]
	return err
}

func (sw *snapshotWriter) inode(n *Inode) error {
	var kind uint64
	if n.IsDir() {
		kind |= recDir
	}
	if n.Client() != "" {
		kind |= recUC
	}
	if n.UCPath() != "" {
		kind |= recUCPath
	}
	if n.a.w != nil && n.a.w.overwrite {
		kind |= recUCOverwrite
	}
	sw.uvarint(kind)
	sw.uvarint(n.ID())
	var parent uint64
	if n.Parent != nil {
		parent = n.Parent.ID()
	}
	sw.uvarint(parent)
	sw.str(n.Name())
	sw.uvarint(uint64(n.Perm()))
	sw.str(n.Owner())
	sw.str(n.Group())
	sw.varint(n.Mtime())
	sw.varint(n.Atime())
	if !n.IsDir() {
		sw.uvarint(uint64(n.Replication()))
		sw.uvarint(n.BlockSize())
		bs := n.Blocks()
		sw.uvarint(uint64(len(bs)))
		for _, b := range bs {
			sw.uvarint(b.ID)
			sw.uvarint(b.GenStamp)
			sw.uvarint(b.Len)
		}
	}
	if n.Client() != "" {
		sw.str(n.Client())
	}
	if n.UCPath() != "" {
		sw.str(n.UCPath())
	}
	return sw.flush()
}

// WriteSnapshot writes the whole tree.
func (t *Tree) WriteSnapshot(w io.Writer) error {
	sw := &snapshotWriter{w: bufio.NewWriterSize(w, 1<<20), crc: crc32.New(snapshotCRC)}
	sw.buf = append(sw.buf, snapshotMagic...)
	for _, v := range []uint64{t.lastIndex, t.nextInodeID, t.nextBlockID, t.nextGenStamp, uint64(t.files.Len())} {
		sw.uvarint(v)
	}
	if err := sw.flush(); err != nil {
		return err
	}
	var walk func(n *Inode) error
	walk = func(n *Inode) error {
		if err := sw.inode(n); err != nil {
			return err
		}
		for c := range n.Children() {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(t.root); err != nil {
		return err
	}
	for _, n := range t.ucPath {
		if err := sw.inode(n); err != nil {
			return err
		}
	}
	sw.uvarint(recEnd)
	if err := sw.flush(); err != nil {
		return err
	}
	if err := binary.Write(sw.w, binary.BigEndian, sw.crc.Sum32()); err != nil {
		return err
	}
	return sw.w.Flush()
}

// snapshotReader decodes the stream from its own buffer and checksums
// what it decoded a buffer at a time: byte-at-a-time reading through a
// checksum was most of a restart's time.
type snapshotReader struct {
	r        io.Reader
	buf      []byte
	pos, end int // buf[pos:end] is read but not decoded yet
	summed   int // buf[:summed] is in crc (buf[summed:pos] still to add)
	crc      hash.Hash32
	err      error
	strings  map[string]string // owners, groups and clients repeat: keep one copy
	// Names and block lists of loaded inodes are carved out of shared
	// slabs rather than allocated one by one. A slab stays while any of
	// its pieces does.
	nameSlab  []byte
	blockSlab []Block
}

// fill reads until n bytes are buffered or the stream ends.
func (sr *snapshotReader) fill(n int) {
	if sr.end-sr.pos >= n || sr.err != nil {
		return
	}
	sr.crc.Write(sr.buf[sr.summed:sr.pos])
	sr.end = copy(sr.buf, sr.buf[sr.pos:sr.end])
	sr.pos, sr.summed = 0, 0
	for sr.end < n {
		k, err := sr.r.Read(sr.buf[sr.end:])
		sr.end += k
		if err == io.EOF {
			return
		}
		if err != nil {
			sr.err = err
			return
		}
	}
}

// sum is the checksum of everything decoded so far.
func (sr *snapshotReader) sum() uint32 {
	sr.crc.Write(sr.buf[sr.summed:sr.pos])
	sr.summed = sr.pos
	return sr.crc.Sum32()
}

func (sr *snapshotReader) uvarint() uint64 { return readNumber(sr, binary.Uvarint) }
func (sr *snapshotReader) varint() int64   { return readNumber(sr, binary.Varint) }

// readNumber decodes the next varint with decode (binary.Uvarint or
// binary.Varint).
func readNumber[T int64 | uint64](sr *snapshotReader, decode func([]byte) (T, int)) T {
	if sr.err != nil {
		return 0
	}
	sr.fill(binary.MaxVarintLen64)
	v, k := decode(sr.buf[sr.pos:sr.end])
	if k <= 0 {
		sr.err = errors.New("truncated or bad number")
		return 0
	}
	sr.pos += k
	return v
}

// bytes returns the next n bytes, valid until the next read.
func (sr *snapshotReader) bytes(n uint64) []byte {
	if sr.err != nil {
		return nil
	}
	if n > MaxPathLen {
		sr.err = fmt.Errorf("string of %d bytes", n)
		return nil
	}
	sr.fill(int(n))
	if uint64(sr.end-sr.pos) < n {
		sr.err = io.ErrUnexpectedEOF
		return nil
	}
	b := sr.buf[sr.pos : sr.pos+int(n)]
	sr.pos += int(n)
	return b
}

func (sr *snapshotReader) str() string { return string(sr.bytes(sr.uvarint())) }

// name reads an inode's name into space shared with other names: one
// allocation per slabSize bytes of names instead of one per inode.
func (sr *snapshotReader) name() string {
	size := sr.uvarint()
	if size > MaxNameLen {
		if sr.err == nil {
			sr.err = fmt.Errorf("name of %d bytes", size)
		}
		return ""
	}
	b := sr.bytes(size)
	if len(b) == 0 {
		return ""
	}
	if len(b) > len(sr.nameSlab) {
		sr.nameSlab = make([]byte, max(len(b), slabSize))
	}
	n := copy(sr.nameSlab, b)
	s := unsafe.String(&sr.nameSlab[0], n)
	sr.nameSlab = sr.nameSlab[n:]
	return s
}

// blocks returns space for the blocks of a file of more than one, carved
// out of space shared with other files (its capacity is its own: an
// append reallocates).
func (sr *snapshotReader) blocks(count int) []Block {
	if count > len(sr.blockSlab) {
		sr.blockSlab = make([]Block, max(count, slabSize/int(unsafe.Sizeof(Block{}))))
	}
	b := sr.blockSlab[:count:count]
	sr.blockSlab = sr.blockSlab[count:]
	return b
}

// interned reads a string that many inodes share.
func (sr *snapshotReader) interned() string {
	b := sr.bytes(sr.uvarint())
	if s, ok := sr.strings[string(b)]; ok {
		return s
	}
	s := string(b)
	sr.strings[s] = s
	return s
}

const slabSize = 64 << 10

// ReadSnapshot builds a tree from a snapshot written by WriteSnapshot.
func ReadSnapshot(r io.Reader) (*Tree, error) {
	sr := &snapshotReader{r: r, buf: make([]byte, 1<<20), crc: crc32.New(snapshotCRC), strings: map[string]string{}}
	magic := string(sr.bytes(uint64(len(snapshotMagic))))
	if magic != snapshotMagic && magic != snapshotMagicV2 {
		return nil, fmt.Errorf("read snapshot: not a godfs namespace snapshot (%v)", sr.err)
	}
	t := newTree()
	t.lastIndex, t.nextInodeID, t.nextBlockID, t.nextGenStamp = sr.uvarint(), sr.uvarint(), sr.uvarint(), sr.uvarint()
	files := uint64(0)
	if magic == snapshotMagic {
		// Bounded, since the checksum that vouches for it comes last.
		files = sr.uvarint()
	}
	dirs := map[uint64]*Inode{}
	for sr.err == nil {
		kind := sr.uvarint()
		if kind == recEnd {
			break
		}
		n := &Inode{}
		if kind&recDir != 0 {
			n.bits = dirBit
		}
		id := sr.uvarint()
		n.id = put48(id)
		parent := sr.uvarint()
		n.keepName(sr.name())
		n.setPerm(uint16(sr.uvarint()))
		var a attrs
		a.user = sr.interned()
		a.group = sr.interned()
		mtime, atime := sr.varint(), sr.varint()
		if id > MaxInodeID || !validTime(mtime) || !validTime(atime) {
			return nil, fmt.Errorf("read snapshot: inode %d: id or times out of range (damaged checkpoint)", id)
		}
		n.setMtime(mtime)
		n.setAtime(atime)
		if n.IsDir() {
			a.kids = new(children)
		} else {
			repl := sr.uvarint()
			if repl > maxReplication {
				return nil, fmt.Errorf("read snapshot: inode %d: replication %d (damaged checkpoint)", id, repl)
			}
			n.setReplication(uint16(repl))
			a.blockSize = sr.uvarint()
			count := sr.uvarint()
			if count > 1<<24 {
				return nil, fmt.Errorf("read snapshot: inode %d has %d blocks", id, count)
			}
			if count == 1 {
				b := Block{ID: sr.uvarint(), GenStamp: sr.uvarint(), Len: sr.uvarint()}
				if fitsInline(b) {
					n.one = packBlock(b)
					n.setBits(oneBit, oneBit)
				} else {
					a.blocks = &[]Block{b}
				}
			} else if count > 1 {
				bs := sr.blocks(int(count))
				for i := range bs {
					bs[i] = Block{ID: sr.uvarint(), GenStamp: sr.uvarint(), Len: sr.uvarint()}
				}
				a.blocks = &bs
			}
		}
		if kind&recUC != 0 {
			a.w = &writing{client: sr.interned(), overwrite: kind&recUCOverwrite != 0}
			if kind&recUCPath != 0 {
				a.w.path = sr.str()
			}
		}
		t.setAttrs(n, a)
		if sr.err != nil {
			break
		}
		if n.IsDir() {
			dirs[n.ID()] = n
		} else {
			t.files.Put(n.ID(), n)
		}
		switch {
		case t.root == nil:
			if !n.IsDir() || parent != 0 {
				return nil, errors.New("read snapshot: first inode is not the root")
			}
			t.root = n
		case n.UCPath() != "":
			t.ucPath[n.UCPath()] = n
		default:
			p, ok := dirs[parent]
			if !ok {
				return nil, fmt.Errorf("read snapshot: inode %d has unknown parent %d", n.ID(), parent)
			}
			n.Parent = p
			p.a.kids.appendInOrder(n) // written in order (sorted below if not)
		}
		if n.Client() != "" {
			t.uc[n.ID()] = n
		}
	}
	if sr.err != nil {
		return nil, fmt.Errorf("read snapshot: %w", sr.err)
	}
	if magic == snapshotMagic && uint64(t.files.Len()) != files {
		return nil, fmt.Errorf("read snapshot: %d files, the header says %d (damaged checkpoint)", t.files.Len(), files)
	}
	want := sr.sum()
	if got := sr.bytes(4); sr.err != nil || binary.BigEndian.Uint32(got) != want {
		return nil, fmt.Errorf("read snapshot: checksum mismatch (damaged checkpoint)")
	}
	if t.root == nil {
		return nil, errors.New("read snapshot: no root")
	}
	// Checkpoints written before children were kept sorted list them in
	// any order.
	for _, d := range dirs {
		d.a.kids.sortAll()
	}
	return t, nil
}

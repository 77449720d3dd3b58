package namespace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/godfs/godfs/protocol"
)

// applier numbers entries and applies them.
type applier struct {
	t    *testing.T
	tree *Tree
}

func newApplier(t *testing.T) *applier { return &applier{t: t, tree: New("root", "supergroup", 1)} }

func (a *applier) apply(e Entry) (Result, error) {
	e.Index = a.tree.LastIndex() + 1
	if e.FileID == 0 && (e.Type == OpMkdir || e.Type == OpCreate) {
		e.FileID = a.tree.NextInodeID()
	}
	return a.tree.Apply(&e)
}

func (a *applier) must(e Entry) Result {
	a.t.Helper()
	r, err := a.apply(e)
	if err != nil {
		a.t.Fatalf("%s %s: %v", e.Type, e.Path, err)
	}
	return r
}

// writeFile creates, fills and completes a file with blocks of the given lengths.
func (a *applier) writeFile(path string, lens ...uint64) *Inode {
	a.t.Helper()
	n := a.must(Entry{Type: OpCreate, Path: path, Client: "c", Replication: 3, BlockSize: 1 << 20}).Inode
	var prev *Block
	for _, l := range lens {
		b := Block{ID: a.tree.NextBlockID(), GenStamp: a.tree.NextGenStamp()}
		a.must(Entry{Type: OpAddBlock, FileID: n.ID(), Client: "c", Block: &b, Previous: prev})
		prev = &Block{ID: b.ID, GenStamp: b.GenStamp, Len: l}
	}
	a.must(Entry{Type: OpComplete, FileID: n.ID(), Client: "c", Previous: prev, Time: 5})
	return n
}

// Resolving a path takes no allocation: lookups are most of a master's
// calls, and the components' slice was 5% of a metadata run's garbage.
// SplitPath still gives the components of deeper paths than Lookup's
// stack space holds, in one allocation.
func TestLookupAllocatesNothing(t *testing.T) {
	a := newApplier(t)
	a.must(Entry{Type: OpMkdir, Path: "/a/b/c/d", Parents: true, Perm: 0o755})
	if n := testing.AllocsPerRun(100, func() {
		if _, err := a.tree.Lookup("/a/b/c/d"); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Lookup made %v allocations, want 0", n)
	}
	deep := strings.Repeat("/d", 40)
	a.must(Entry{Type: OpMkdir, Path: deep, Parents: true, Perm: 0o755})
	if parts, err := SplitPath(deep); err != nil || len(parts) != 40 {
		t.Fatalf("SplitPath of 40 components: %d, %v", len(parts), err)
	}
	if n := testing.AllocsPerRun(100, func() { SplitPath(deep) }); n != 1 {
		t.Fatalf("SplitPath made %v allocations, want 1", n)
	}
	if n, err := a.tree.Lookup(deep); err != nil || !n.IsDir() {
		t.Fatalf("Lookup of 40 components: %v", err)
	}
}

func TestPathValidation(t *testing.T) {
	for _, p := range []string{"", "a", "/a/", "//a", "/a/./b", "/a/../b", "/a:b", "/a\x00", "/" + strings.Repeat("x", 256)} {
		if _, err := SplitPath(p); !errors.Is(err, protocol.ErrInvalidPath) {
			t.Errorf("SplitPath(%q) = %v, want ErrInvalidPath", p, err)
		}
	}
	if parts, err := SplitPath("/a/b c/d"); err != nil || len(parts) != 3 {
		t.Errorf("SplitPath: %v %v", parts, err)
	}
}

func TestMkdir(t *testing.T) {
	a := newApplier(t)
	a.must(Entry{Type: OpMkdir, Path: "/a/b/c", Parents: true, Perm: 0o755})
	if _, err := a.apply(Entry{Type: OpMkdir, Path: "/a/b"}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("mkdir existing: %v", err)
	}
	a.must(Entry{Type: OpMkdir, Path: "/a/b", Parents: true}) // mkdir -p of an existing dir
	if _, err := a.apply(Entry{Type: OpMkdir, Path: "/x/y"}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("mkdir without parent: %v", err)
	}
	a.writeFile("/a/f", 10)
	if _, err := a.apply(Entry{Type: OpMkdir, Path: "/a/f/g", Parents: true}); !errors.Is(err, protocol.ErrNotDir) {
		t.Fatalf("mkdir under a file: %v", err)
	}
}

func TestFileVisibleOnlyWhenComplete(t *testing.T) {
	a := newApplier(t)
	n := a.must(Entry{Type: OpCreate, Path: "/f", Client: "c1", Replication: 3}).Inode
	if _, err := a.tree.Lookup("/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file under construction is visible: %v", err)
	}
	if _, err := a.apply(Entry{Type: OpCreate, Path: "/f", Client: "c2"}); !errors.Is(err, protocol.ErrLeaseHeld) {
		t.Fatalf("second writer: %v", err)
	}
	if _, err := a.apply(Entry{Type: OpComplete, FileID: n.ID(), Client: "c2"}); !errors.Is(err, protocol.ErrNoLease) {
		t.Fatalf("complete by another client: %v", err)
	}
	a.must(Entry{Type: OpComplete, FileID: n.ID(), Client: "c1"})
	if _, err := a.tree.Lookup("/f"); err != nil {
		t.Fatal(err)
	}
	// Abandoned files leave nothing behind but freed blocks.
	m := a.must(Entry{Type: OpCreate, Path: "/g", Client: "c1"}).Inode
	a.must(Entry{Type: OpAddBlock, FileID: m.ID(), Client: "c1", Block: &Block{ID: 77, GenStamp: 1}})
	r := a.must(Entry{Type: OpAbandonFile, FileID: m.ID()})
	if len(r.Freed) != 1 || r.Freed[0].ID != 77 {
		t.Fatalf("abandon freed %v", r.Freed)
	}
	if _, err := a.tree.Lookup("/g"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("abandoned file visible")
	}
}

func TestOverwriteReplacesAtComplete(t *testing.T) {
	a := newApplier(t)
	old := a.writeFile("/f", 100)
	if _, err := a.apply(Entry{Type: OpCreate, Path: "/f", Client: "c"}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create over existing: %v", err)
	}
	n := a.must(Entry{Type: OpCreate, Path: "/f", Client: "c", Overwrite: true}).Inode
	if got, _ := a.tree.Lookup("/f"); got != old {
		t.Fatal("old file replaced before the new one is complete")
	}
	r := a.must(Entry{Type: OpComplete, FileID: n.ID(), Client: "c"})
	if len(r.Freed) != 1 || r.Freed[0].Len != 100 {
		t.Fatalf("complete freed %v, want the old file's block", r.Freed)
	}
}

func TestRenameAndDelete(t *testing.T) {
	a := newApplier(t)
	a.must(Entry{Type: OpMkdir, Path: "/a/b", Parents: true})
	a.writeFile("/a/b/f", 10, 20)
	a.must(Entry{Type: OpMkdir, Path: "/c"})
	if _, err := a.apply(Entry{Type: OpRename, Path: "/a", Dst: "/a/b/x"}); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatalf("rename into own subtree: %v", err)
	}
	if _, err := a.apply(Entry{Type: OpRename, Path: "/a", Dst: "/c"}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("rename onto existing: %v", err)
	}
	a.must(Entry{Type: OpRename, Path: "/a", Dst: "/c", Overwrite: true}) // empty dir may be replaced
	if n, err := a.tree.Lookup("/c/b/f"); err != nil || n.Len() != 30 || n.Path() != "/c/b/f" {
		t.Fatalf("after rename: %v %v", n, err)
	}
	if _, err := a.apply(Entry{Type: OpDelete, Path: "/c"}); !errors.Is(err, protocol.ErrNotEmpty) {
		t.Fatalf("delete non-empty: %v", err)
	}
	r := a.must(Entry{Type: OpDelete, Path: "/c", Recursive: true})
	if len(r.Freed) != 2 {
		t.Fatalf("delete -r freed %v", r.Freed)
	}
	if _, err := a.apply(Entry{Type: OpDelete, Path: "/"}); err == nil {
		t.Fatal("deleted the root")
	}
}

func TestTruncate(t *testing.T) {
	a := newApplier(t)
	a.writeFile("/f", 100, 100, 50)
	if _, err := a.apply(Entry{Type: OpTruncate, Path: "/f", Length: 150}); !errors.Is(err, protocol.ErrInvalidArgument) {
		t.Fatalf("truncate inside a block without a new stamp: %v", err)
	}
	r := a.must(Entry{Type: OpTruncate, Path: "/f", Length: 200})
	if n, _ := a.tree.Lookup("/f"); n.Len() != 200 || len(r.Freed) != 1 {
		t.Fatalf("truncate at a block boundary: len %d freed %v", n.Len(), r.Freed)
	}
	gs := a.tree.NextGenStamp()
	r = a.must(Entry{Type: OpTruncate, Path: "/f", Length: 130, Block: &Block{GenStamp: gs}})
	n, _ := a.tree.Lookup("/f")
	if n.Len() != 130 || len(n.Blocks()) != 2 || n.Blocks()[1].Len != 30 || n.Blocks()[1].GenStamp != gs || len(r.Freed) != 0 {
		t.Fatalf("truncate inside a block: %+v freed %v", n.Blocks(), r.Freed)
	}
}

// TestResizedAddsUpToBlockLengths follows the lengths of a file's blocks
// through hflush, addBlock, complete, truncate and lease recovery: the
// changes each entry reports (from which the master counts datanodes'
// bytes) add up to the lengths the tree holds, and a complete that fails
// changes no length.
func TestResizedAddsUpToBlockLengths(t *testing.T) {
	a := newApplier(t)
	total := map[uint64]int64{}
	do := func(e Entry) Result {
		t.Helper()
		r := a.must(e)
		if r.Resized.ID != 0 {
			total[r.Resized.ID] += r.Resized.Delta
		}
		for _, b := range r.Freed {
			total[b.ID] -= int64(b.Len)
		}
		return r
	}
	check := func(when string, n *Inode) {
		t.Helper()
		for _, b := range n.Blocks() {
			if total[b.ID] != int64(b.Len) {
				t.Fatalf("%s: block %d is %d bytes, its changes add up to %d", when, b.ID, b.Len, total[b.ID])
			}
		}
	}
	f := do(Entry{Type: OpCreate, Path: "/f", Client: "c", Replication: 3, BlockSize: 1 << 20}).Inode
	b1 := Block{ID: a.tree.NextBlockID(), GenStamp: a.tree.NextGenStamp()}
	do(Entry{Type: OpAddBlock, FileID: f.ID(), Client: "c", Block: &b1})
	do(Entry{Type: OpFsync, FileID: f.ID(), Client: "c", Block: &Block{ID: b1.ID, Len: 100}})
	check("after hflush", f)
	b2 := Block{ID: a.tree.NextBlockID(), GenStamp: a.tree.NextGenStamp()}
	do(Entry{Type: OpAddBlock, FileID: f.ID(), Client: "c", Block: &b2, Previous: &Block{ID: b1.ID, GenStamp: b1.GenStamp, Len: 1000}})
	check("after addBlock", f)
	do(Entry{Type: OpComplete, FileID: f.ID(), Client: "c", Previous: &Block{ID: b2.ID, GenStamp: b2.GenStamp, Len: 700}})
	check("after complete", f)
	do(Entry{Type: OpTruncate, Path: "/f", Length: 1200, Block: &Block{GenStamp: a.tree.NextGenStamp()}})
	check("after truncate", f)
	if f.Len() != 1200 {
		t.Fatalf("truncated to %d bytes", f.Len())
	}

	g := do(Entry{Type: OpCreate, Path: "/g", Client: "c", Replication: 3, BlockSize: 1 << 20}).Inode
	b3 := Block{ID: a.tree.NextBlockID(), GenStamp: a.tree.NextGenStamp()}
	do(Entry{Type: OpAddBlock, FileID: g.ID(), Client: "c", Block: &b3})
	do(Entry{Type: OpReportBlock, FileID: g.ID(), Block: &Block{ID: b3.ID, GenStamp: a.tree.NextGenStamp(), Len: 300}})
	check("after lease recovery", g)
	// The path is taken before the file completes: nothing changes.
	do(Entry{Type: OpMkdir, Path: "/g"})
	if _, err := a.apply(Entry{Type: OpComplete, FileID: g.ID(), Client: "c", Previous: &Block{ID: b3.ID, GenStamp: b3.GenStamp, Len: 900}}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("complete onto a directory: %v", err)
	}
	check("after a failed complete", g)
}

// TestBlocksInlineAndOwn follows a file's blocks from none to several and
// back: one is kept in the inode, more in attrs of the file's own, and a
// file of one block again shares its attrs with its likes.
func TestBlocksInlineAndOwn(t *testing.T) {
	a := newApplier(t)
	one := a.writeFile("/one", 7)
	n := a.must(Entry{Type: OpCreate, Path: "/f", Client: "c", Replication: 3, BlockSize: 1 << 20}).Inode
	var prev *Block
	var want []Block
	for i, l := range []uint64{100, 100, 50} {
		b := Block{ID: a.tree.NextBlockID(), GenStamp: a.tree.NextGenStamp()}
		a.must(Entry{Type: OpAddBlock, FileID: n.ID(), Client: "c", Block: &b, Previous: prev})
		if prev != nil {
			want[i-1].Len = prev.Len
		}
		want = append(want, b)
		if !slices.Equal(n.Blocks(), want) || n.hasOne() != (i == 0) || (n.a.blocks != nil) != (i > 0) {
			t.Fatalf("after %d blocks: %v (inline %v), want %v", i+1, n.Blocks(), n.hasOne(), want)
		}
		prev = &Block{ID: b.ID, GenStamp: b.GenStamp, Len: l}
	}
	a.must(Entry{Type: OpComplete, FileID: n.ID(), Client: "c", Previous: prev, Time: 5})
	if n.Len() != 250 || n.a == one.a {
		t.Fatalf("complete file of 3 blocks: len %d, shares attrs %v", n.Len(), n.a == one.a)
	}
	gs := a.tree.NextGenStamp()
	r := a.must(Entry{Type: OpTruncate, Path: "/f", Length: 60, Block: &Block{GenStamp: gs}})
	if got := n.Blocks(); len(got) != 1 || got[0].ID != want[0].ID || got[0].Len != 60 || got[0].GenStamp != gs ||
		!n.hasOne() || n.a != one.a || len(r.Freed) != 2 {
		t.Fatalf("truncated to one block: %v (inline %v, shared attrs %v), freed %v", got, n.hasOne(), n.a == one.a, r.Freed)
	}
	if t2 := reload(t, a.tree); dump(t2) != dump(a.tree) {
		t.Fatalf("snapshot round trip differs:\n%s\nvs\n%s", dump(t2), dump(a.tree))
	}
	gs = a.tree.NextGenStamp()
	a.must(Entry{Type: OpTruncate, Path: "/f", Length: 20, Block: &Block{GenStamp: gs}})
	if got := n.Blocks(); len(got) != 1 || got[0].ID != want[0].ID || got[0].Len != 20 || got[0].GenStamp != gs {
		t.Fatalf("the one block truncated inside: %v", got)
	}
	r = a.must(Entry{Type: OpTruncate, Path: "/f", Length: 0})
	if len(n.Blocks()) != 0 || n.hasOne() || len(r.Freed) != 1 || r.Freed[0].ID != want[0].ID {
		t.Fatalf("truncated to nothing: %v, freed %v", n.Blocks(), r.Freed)
	}
	if b := one.Blocks(); len(b) != 1 || b[0].Len != 7 {
		t.Fatalf("the other file's block changed: %v", b)
	}
	// The blocks a file frees as it goes are its own.
	gone := a.writeFile("/gone", 9).Blocks()[0]
	if r := a.must(Entry{Type: OpDelete, Path: "/gone"}); len(r.Freed) != 1 || r.Freed[0] != gone {
		t.Fatalf("delete freed %v, want %v", r.Freed, gone)
	}
	w := a.must(Entry{Type: OpCreate, Path: "/w", Client: "c"}).Inode
	blk := Block{ID: a.tree.NextBlockID(), GenStamp: a.tree.NextGenStamp()}
	a.must(Entry{Type: OpAddBlock, FileID: w.ID(), Client: "c", Block: &blk})
	if r := a.must(Entry{Type: OpAbandonFile, FileID: w.ID()}); len(r.Freed) != 1 || r.Freed[0] != blk {
		t.Fatalf("abandon freed %v, want %v", r.Freed, blk)
	}
}

// snapshot returns tree's snapshot.
func snapshot(t *testing.T, tree *Tree) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := tree.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// reload returns the tree tree's snapshot loads as.
func reload(t *testing.T, tree *Tree) *Tree {
	t.Helper()
	t2, err := ReadSnapshot(bytes.NewReader(snapshot(t, tree)))
	if err != nil {
		t.Fatal(err)
	}
	return t2
}

func TestSnapshotRoundTrip(t *testing.T) {
	a := newApplier(t)
	a.must(Entry{Type: OpMkdir, Path: "/a/b", Parents: true, Perm: 0o700, Owner: "u"})
	a.writeFile("/a/b/f", 1, 2, 3)
	long := "/a/" + strings.Repeat("n", MaxNameLen) // the longest name a length byte holds
	if n := a.writeFile(long, 4); n.Name() != long[3:] || n.Path() != long {
		t.Fatalf("a name of %d bytes reads back as %d bytes", MaxNameLen, len(n.Name()))
	}
	a.must(Entry{Type: OpCreate, Path: "/a/pending", Client: "w"})
	t2 := reload(t, a.tree)
	if dump(t2) != dump(a.tree) || t2.LastIndex() != a.tree.LastIndex() || t2.NextBlockID() != a.tree.NextBlockID() {
		t.Fatalf("snapshot round trip differs:\n%s\nvs\n%s", dump(t2), dump(a.tree))
	}
	if t2.UnderConstruction(a.tree.ucPath["/a/pending"].ID()) == nil {
		t.Fatal("file under construction lost in the snapshot")
	}
}

// TestLoadedFilesStayApart changes files of a tree loaded from a snapshot
// (whose names and block lists share space) and checks their neighbours
// do not change with them.
func TestLoadedFilesStayApart(t *testing.T) {
	a := newApplier(t)
	a.writeFile("/x1", 1)
	a.writeFile("/x2", 2)
	a.writeFile("/x3", 3)
	t2 := reload(t, a.tree)
	a.tree = t2
	x1, _ := t2.Lookup("/x1")
	x2, _ := t2.Lookup("/x2")
	x3, _ := t2.Lookup("/x3")
	want1, want3 := slices.Clone(x1.Blocks()), slices.Clone(x3.Blocks())
	a.must(Entry{Type: OpAppend, Path: "/x2", Client: "c2"})
	blk := Block{ID: t2.NextBlockID(), GenStamp: t2.NextGenStamp()}
	a.must(Entry{Type: OpAddBlock, FileID: x2.ID(), Client: "c2", Block: &blk})
	a.must(Entry{Type: OpComplete, FileID: x2.ID(), Client: "c2", Previous: &Block{ID: blk.ID, GenStamp: blk.GenStamp, Len: 9}, Time: 6})
	a.must(Entry{Type: OpRename, Path: "/x1", Dst: "/y1"})
	if len(x2.Blocks()) != 2 || x2.Blocks()[1].ID != blk.ID {
		t.Fatalf("appended file has blocks %v", x2.Blocks())
	}
	if !slices.Equal(x1.Blocks(), want1) || !slices.Equal(x3.Blocks(), want3) || x1.Name() != "y1" || x3.Name() != "x3" || x2.Name() != "x2" {
		t.Fatalf("neighbours changed: %s %v, %s %v", x1.Name(), x1.Blocks(), x3.Name(), x3.Blocks())
	}
}

// TestInodeSize keeps the inode, a one-block file's block included, in
// its 64-byte allocation class: a byte more costs 16 bytes per file (1.6
// GB at 100 million files).
func TestInodeSize(t *testing.T) {
	if got := unsafe.Sizeof(Inode{}); got != 64 {
		t.Fatalf("Inode is %d bytes, want 64", got)
	}
}

// TestInodePacking checks that what an inode packs comes back whole at
// the ends of each range, and that a block too big to pack is kept
// outside the inode, whole, and survives a checkpoint.
func TestInodePacking(t *testing.T) {
	a := newApplier(t)
	for _, tc := range []struct {
		perm, repl uint16
		time       int64
		name       string
	}{{0, 1, 0, "a"}, {0o1777, 512, MaxTime, strings.Repeat("n", MaxNameLen)}, {0o755, 3, 1_800_000_000_000, "x"}} {
		n := a.must(Entry{Type: OpCreate, Path: "/" + tc.name, Perm: tc.perm, Replication: tc.repl, Time: tc.time, Client: "c"}).Inode
		a.must(Entry{Type: OpComplete, FileID: n.ID(), Client: "c", Time: tc.time})
		for _, l := range []*Inode{n, reload(t, a.tree).files.Get(n.ID())} {
			if l.Perm() != tc.perm || l.Replication() != tc.repl || l.Mtime() != tc.time || l.Atime() != tc.time || l.Name() != tc.name || l.IsDir() {
				t.Fatalf("kept perm %o repl %d times %d/%d name %q dir %v, want %o %d %d %q", l.Perm(), l.Replication(), l.Mtime(), l.Atime(),
					l.Name(), l.IsDir(), tc.perm, tc.repl, tc.time, tc.name)
			}
		}
	}
	if _, err := a.apply(Entry{Type: OpSetTimes, Path: "/a", Time: MaxTime + 1, Atime: -1}); !errors.Is(err, protocol.ErrInvalidArgument) {
		t.Fatalf("a time past MaxTime: %v", err)
	}
	for i, b := range []Block{
		{ID: 1<<48 - 1, GenStamp: 1<<48 - 1, Len: 1<<48 - 1},
		{ID: 1 << 48, GenStamp: 5, Len: 7},
		{ID: 9, GenStamp: 1 << 60, Len: 7},
		{ID: 9, GenStamp: 5, Len: 1 << 50},
	} {
		f := a.must(Entry{Type: OpCreate, Path: fmt.Sprintf("/b%d", i), Client: "c"}).Inode
		a.must(Entry{Type: OpAddBlock, FileID: f.ID(), Client: "c", Block: &Block{ID: b.ID, GenStamp: b.GenStamp}})
		a.must(Entry{Type: OpComplete, FileID: f.ID(), Client: "c", Previous: &b})
		for _, l := range []*Inode{f, reload(t, a.tree).files.Get(f.ID())} {
			if got, ok := l.LastBlock(); !ok || got != b || l.NumBlocks() != 1 || l.hasOne() != fitsInline(b) {
				t.Fatalf("block %+v kept as %+v (inline %v)", b, got, l.hasOne())
			}
		}
	}
}

// dump renders a tree deterministically for comparison.
func dump(t *Tree) string {
	var lines []string
	t.Files(func(n *Inode) {
		lines = append(lines, fmt.Sprintf("%s %o %s:%s %d %v %s r%d bs%d", n.Path(), n.Perm(), n.Owner(), n.Group(), n.Len(), n.Blocks(),
			n.Client(), n.Replication(), n.BlockSize()))
	})
	var walk func(*Inode)
	walk = func(n *Inode) {
		if n.IsDir() {
			lines = append(lines, fmt.Sprintf("%s/ %o %s:%s", n.Path(), n.Perm(), n.Owner(), n.Group()))
			for c := range n.Children() {
				walk(c)
			}
		}
	}
	walk(t.root)
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestRandomOpsMatchModel applies random operations to a tree and to a
// flat map model and checks they agree, and that replaying the same
// entries on a fresh tree gives the same tree (determinism).
func TestRandomOpsMatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a := newApplier(t)
	model := map[string]bool{"/": true} // path -> isDir
	var log []Entry
	names := []string{"a", "b", "c"}
	randPath := func() string {
		d := rng.IntN(3) + 1
		p := ""
		for i := 0; i < d; i++ {
			p += "/" + names[rng.IntN(len(names))]
		}
		return p
	}
	parentOf := func(p string) string {
		i := strings.LastIndex(p, "/")
		if i == 0 {
			return "/"
		}
		return p[:i]
	}
	for i := 0; i < 3000; i++ {
		p := randPath()
		var e Entry
		switch rng.IntN(4) {
		case 0:
			e = Entry{Type: OpMkdir, Path: p}
		case 1:
			e = Entry{Type: OpCreate, Path: p, Client: "c"}
		case 2:
			e = Entry{Type: OpDelete, Path: p, Recursive: rng.IntN(2) == 0}
		case 3:
			e = Entry{Type: OpRename, Path: p, Dst: randPath()}
		}
		e.Index = a.tree.LastIndex() + 1
		if e.Type == OpMkdir || e.Type == OpCreate {
			e.FileID = a.tree.NextInodeID()
		}
		res, err := a.tree.Apply(&e)
		// What the model says should happen.
		isDir, exists := model[p]
		parentDir, parentOK := model[parentOf(p)]
		switch e.Type {
		case OpMkdir:
			if ok := !exists && parentOK && parentDir; ok != (err == nil) {
				t.Fatalf("op %d mkdir %s: err %v, model says ok=%v", i, p, err, ok)
			}
			if err == nil {
				model[p] = true
			}
		case OpCreate:
			ok := !exists && parentOK && parentDir && a.tree.ucPath[p] == res.Inode
			if err == nil && !ok {
				t.Fatalf("op %d create %s succeeded, model disagrees", i, p)
			}
			if err == nil { // complete it at once
				ce := Entry{Index: a.tree.LastIndex() + 1, Type: OpComplete, FileID: res.Inode.ID(), Client: "c"}
				if _, err := a.tree.Apply(&ce); err != nil {
					t.Fatalf("complete %s: %v", p, err)
				}
				log = append(log, e)
				e = ce
				model[p] = false
			}
		case OpDelete:
			hasChildren := false
			for q := range model {
				if strings.HasPrefix(q, p+"/") {
					hasChildren = true
				}
			}
			ok := exists && (!isDir || !hasChildren || e.Recursive)
			if ok != (err == nil) {
				t.Fatalf("op %d delete %s: err %v, model says ok=%v", i, p, err, ok)
			}
			if err == nil {
				for q := range model {
					if q == p || strings.HasPrefix(q, p+"/") {
						delete(model, q)
					}
				}
			}
		case OpRename:
			_, dstExists := model[e.Dst]
			dstParentDir, dstParentOK := model[parentOf(e.Dst)]
			ok := exists && !dstExists && dstParentOK && dstParentDir && !strings.HasPrefix(e.Dst+"/", p+"/")
			if e.Dst == p && exists {
				ok = true
			}
			if ok != (err == nil) {
				t.Fatalf("op %d rename %s -> %s: err %v, model says ok=%v", i, p, e.Dst, err, ok)
			}
			if err == nil && e.Dst != p {
				moved := map[string]bool{}
				for q, d := range model {
					if q == p || strings.HasPrefix(q, p+"/") {
						moved[e.Dst+strings.TrimPrefix(q, p)] = d
						delete(model, q)
					}
				}
				for q, d := range moved {
					model[q] = d
				}
			}
		}
		if err == nil {
			log = append(log, e)
		}
	}
	if len(log) < 500 {
		t.Fatalf("only %d of 3000 random ops succeeded: the test exercises too little", len(log))
	}
	// Replay determinism.
	t2 := New("root", "supergroup", 1)
	for i := range log {
		if _, err := t2.Apply(&log[i]); err != nil {
			t.Fatalf("replay entry %d (%s): %v", i, log[i].Type, err)
		}
	}
	if dump(t2) != dump(a.tree) {
		t.Fatal("replaying the log gives a different tree")
	}
}

func TestSnapshotDetectsDamage(t *testing.T) {
	a := newApplier(t)
	a.writeFile("/f", 1, 2)
	b := snapshot(t, a.tree)
	for _, i := range []int{len(snapshotMagic) + 3, len(b) / 2, len(b) - 2} {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x40
		if _, err := ReadSnapshot(bytes.NewReader(bad)); err == nil {
			t.Errorf("a snapshot with byte %d flipped loaded", i)
		}
	}
	if _, err := ReadSnapshot(bytes.NewReader(b[:len(b)-10])); err == nil {
		t.Error("a truncated snapshot loaded")
	}
}

// TestLargeSnapshot round-trips a snapshot several times the reader's
// buffer, and detects a flipped byte past the first buffer's worth.
func TestLargeSnapshot(t *testing.T) {
	a := newApplier(t)
	a.must(Entry{Type: OpMkdir, Path: "/d", Perm: 0o755, Owner: "u"})
	for i := 0; i < 60000; i++ {
		a.writeFile(fmt.Sprintf("/d/file-with-a-longish-name-%06d", i), uint64(i))
	}
	b := snapshot(t, a.tree)
	if len(b) < 3<<20 {
		t.Fatalf("snapshot of %d bytes: too small to cross buffer refills", len(b))
	}
	t2, err := ReadSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if dump(t2) != dump(a.tree) {
		t.Fatal("large snapshot round trip differs")
	}
	for _, i := range []int{(1 << 20) + 5, len(b) - 100} {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x01
		if _, err := ReadSnapshot(bytes.NewReader(bad)); err == nil {
			t.Errorf("a snapshot with byte %d of %d flipped loaded", i, len(b))
		}
	}
}

// TestVersion2SnapshotLoads reads a snapshot in the previous format (no
// file count in the header), as a master upgraded in place finds it.
func TestVersion2SnapshotLoads(t *testing.T) {
	a := newApplier(t)
	a.writeFile("/f", 1, 2)
	a.must(Entry{Type: OpCreate, Path: "/pending", Client: "w"})
	b := snapshot(t, a.tree)
	// Drop the fifth header number (the file count) and re-checksum.
	rest := b[len(snapshotMagic):]
	var header []byte
	for i := 0; i < 5; i++ {
		_, k := binary.Uvarint(rest)
		if i < 4 {
			header = append(header, rest[:k]...)
		}
		rest = rest[k:]
	}
	v2 := append(append([]byte(snapshotMagicV2), header...), rest[:len(rest)-4]...)
	v2 = binary.BigEndian.AppendUint32(v2, crc32.Checksum(v2, snapshotCRC))
	t2, err := ReadSnapshot(bytes.NewReader(v2))
	if err != nil {
		t.Fatal(err)
	}
	if dump(t2) != dump(a.tree) {
		t.Fatalf("version 2 snapshot loads differently:\n%s\nvs\n%s", dump(t2), dump(a.tree))
	}
}

func TestBlockIndex(t *testing.T) {
	tr := New("u", "g", 0)
	n := &Inode{a: tr.root.a}
	for id := uint64(10); id < 1000; id += 7 {
		tr.setBlocks(n, append(n.Blocks(), Block{ID: id}))
	}
	for i, b := range n.Blocks() {
		if got := n.BlockIndex(b.ID); got != i {
			t.Fatalf("BlockIndex(%d) = %d, want %d", b.ID, got, i)
		}
	}
	for _, id := range []uint64{0, 9, 11, 1000, 1 << 40} {
		if got := n.BlockIndex(id); got != -1 {
			t.Fatalf("BlockIndex(%d) of a block the file does not have = %d", id, got)
		}
	}
}

// File ids end at MaxInodeID (the block map keeps 48 bits of them): a
// create beyond it is refused and changes nothing.
func TestCreateBeyondTheLastFileIDIsRefused(t *testing.T) {
	a := newApplier(t)
	if n := a.must(Entry{Type: OpCreate, Path: "/last", FileID: MaxInodeID, Client: "c"}).Inode; n.ID() != MaxInodeID {
		t.Fatalf("file made with id %d", n.ID())
	}
	if _, err := a.apply(Entry{Type: OpCreate, Path: "/beyond", FileID: MaxInodeID + 1, Client: "c"}); !errors.Is(err, protocol.ErrInvalidArgument) {
		t.Fatalf("create with id %d: %v", uint64(MaxInodeID+1), err)
	}
	if a.tree.UnderConstruction(MaxInodeID+1) != nil || a.tree.NextInodeID() != MaxInodeID+1 {
		t.Fatal("the refused create left a file behind")
	}
}

// TestReserveBlockIDs: a reservation records how far ids may have been
// handed out and, with Block.ID, moves the next id up (never down); the
// binary log form keeps both; snapshots keep neither the reservation (a
// restarted master derives its skip from the next id instead).
func TestReserveBlockIDs(t *testing.T) {
	a := newApplier(t)
	a.writeFile("/f", 10)
	next := a.tree.NextBlockID()
	e := Entry{Index: a.tree.LastIndex() + 1, Type: OpReserveBlockIDs, Length: next + 100}
	b, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	var decoded Entry
	if err := decoded.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if _, err := a.tree.Apply(&decoded); err != nil {
		t.Fatal(err)
	}
	if a.tree.ReservedBlockIDs() != next+100 || a.tree.NextBlockID() != next {
		t.Fatalf("after reserving: reserved %d next %d, want %d and %d", a.tree.ReservedBlockIDs(), a.tree.NextBlockID(), next+100, next)
	}
	a.must(Entry{Type: OpReserveBlockIDs, Block: &Block{ID: next + 500}, Length: next + 50})
	if a.tree.ReservedBlockIDs() != next+100 || a.tree.NextBlockID() != next+500 {
		t.Fatalf("after skipping: reserved %d next %d, want %d and %d", a.tree.ReservedBlockIDs(), a.tree.NextBlockID(), next+100, next+500)
	}
	a.must(Entry{Type: OpReserveBlockIDs, Block: &Block{ID: next}})
	if a.tree.NextBlockID() != next+500 {
		t.Fatalf("a skip moved the next id back to %d", a.tree.NextBlockID())
	}
	var snap bytes.Buffer
	if err := a.tree.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	loaded, err := ReadSnapshot(&snap)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.NextBlockID() != next+500 || loaded.ReservedBlockIDs() != 0 {
		t.Fatalf("loaded snapshot: next %d reserved %d", loaded.NextBlockID(), loaded.ReservedBlockIDs())
	}
}

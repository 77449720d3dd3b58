package namespace

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// snapshotVersion is the checkpoint format version.
const snapshotVersion = 1

type snapshotHeader struct {
	Version      int    `json:"version"`
	Index        uint64 `json:"index"`
	NextInodeID  uint64 `json:"nextInode"`
	NextBlockID  uint64 `json:"nextBlock"`
	NextGenStamp uint64 `json:"nextGenStamp"`
}

type snapshotInode struct {
	ID          uint64  `json:"id"`
	Parent      uint64  `json:"p,omitempty"` // 0: root, or a new file under construction
	Name        string  `json:"n,omitempty"`
	IsDir       bool    `json:"d,omitempty"`
	Perm        uint16  `json:"m"`
	Owner       string  `json:"o"`
	Group       string  `json:"g"`
	Mtime       int64   `json:"mt"`
	Atime       int64   `json:"at"`
	Replication uint16  `json:"r,omitempty"`
	BlockSize   uint64  `json:"bs,omitempty"`
	Blocks      []Block `json:"b,omitempty"`
	Client      string  `json:"c,omitempty"`
	UCPath      string  `json:"up,omitempty"`
	UCOverwrite bool    `json:"ow,omitempty"`
}

// WriteSnapshot writes the whole tree as JSON lines: a header, then every
// inode with parents before children, then new files under construction.
func (t *Tree) WriteSnapshot(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapshotHeader{snapshotVersion, t.lastIndex, t.nextInodeID, t.nextBlockID, t.nextGenStamp}); err != nil {
		return err
	}
	var walk func(n *Inode) error
	walk = func(n *Inode) error {
		if err := enc.Encode(toSnapshot(n)); err != nil {
			return err
		}
		for _, c := range n.Children {
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
		if err := enc.Encode(toSnapshot(n)); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func toSnapshot(n *Inode) snapshotInode {
	s := snapshotInode{ID: n.ID, Name: n.Name, IsDir: n.IsDir, Perm: n.Perm, Owner: n.Owner, Group: n.Group,
		Mtime: n.Mtime, Atime: n.Atime, Replication: n.Replication, BlockSize: n.BlockSize,
		Blocks: n.Blocks, Client: n.Client, UCPath: n.UCPath, UCOverwrite: n.UCOverwrite}
	if n.Parent != nil {
		s.Parent = n.Parent.ID
	}
	return s
}

// ReadSnapshot builds a tree from a snapshot written by WriteSnapshot.
func ReadSnapshot(r io.Reader) (*Tree, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 1<<20))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if h.Version != snapshotVersion {
		return nil, fmt.Errorf("snapshot version %d, want %d", h.Version, snapshotVersion)
	}
	t := &Tree{uc: map[uint64]*Inode{}, ucPath: map[string]*Inode{}, files: map[uint64]*Inode{}, lastIndex: h.Index,
		nextInodeID: h.NextInodeID, nextBlockID: h.NextBlockID, nextGenStamp: h.NextGenStamp}
	dirs := map[uint64]*Inode{}
	for {
		var s snapshotInode
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read snapshot: %w", err)
		}
		n := &Inode{ID: s.ID, Name: s.Name, IsDir: s.IsDir, Perm: s.Perm, Owner: s.Owner, Group: s.Group,
			Mtime: s.Mtime, Atime: s.Atime, Replication: s.Replication, BlockSize: s.BlockSize,
			Blocks: s.Blocks, Client: s.Client, UCPath: s.UCPath, UCOverwrite: s.UCOverwrite}
		if n.IsDir {
			n.Children = map[string]*Inode{}
			dirs[n.ID] = n
		} else {
			t.files[n.ID] = n
		}
		switch {
		case t.root == nil:
			if !n.IsDir || s.Parent != 0 {
				return nil, errors.New("read snapshot: first inode is not the root")
			}
			t.root = n
		case s.UCPath != "":
			t.ucPath[s.UCPath] = n
		default:
			p, ok := dirs[s.Parent]
			if !ok {
				return nil, fmt.Errorf("read snapshot: inode %d has unknown parent %d", s.ID, s.Parent)
			}
			n.Parent = p
			p.Children[n.Name] = n
		}
		if n.Client != "" {
			t.uc[n.ID] = n
		}
	}
	if t.root == nil {
		return nil, errors.New("read snapshot: no root")
	}
	return t, nil
}

package master

import (
	"runtime"

	"github.com/godfs/godfs/master/namespace"
)

// walkHold bounds the inodes a walk of the tree visits per hold of the
// master's lock.
var walkHold = 5000

// walkTree calls fn, with m.mu held, for the inode at path and every inode
// under it, depth first in name order. It lets go of the lock every
// walkHold inodes: a walk of millions of inodes (du or fsck of "/") would
// otherwise stop every client for its whole length (54 ms at 2 million
// files, growing with them). The tree may change between holds; the walk
// resumes each directory after the last name it saw there, so its totals
// are those of a tree changing under it, as HDFS's content summary is.
func (m *Master) walkTree(path string, fn func(n *namespace.Inode)) error {
	type frame struct {
		dir  *namespace.Inode
		last string             // the last child visited ("" before the first)
		kids []*namespace.Inode // the children after last, good for this hold only
		more int                // how many children there are after kids
	}
	visit := func(dir *namespace.Inode, last string) *frame {
		kids, more := dir.ChildrenAfter(last, walkHold)
		return &frame{dir: dir, last: last, kids: kids, more: more}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	root, err := m.mu.tree.Lookup(path)
	if err != nil {
		return err
	}
	fn(root)
	var stack []*frame
	if root.IsDir() {
		stack = append(stack, visit(root, ""))
	}
	for held := 0; len(stack) > 0; held++ {
		if held == walkHold {
			m.mu.Unlock()
			runtime.Gosched() // let a waiting client in
			m.mu.Lock()
			held = 0
			for i, f := range stack {
				stack[i] = visit(f.dir, f.last)
			}
		}
		f := stack[len(stack)-1]
		if len(f.kids) == 0 && f.more > 0 {
			*f = *visit(f.dir, f.last)
		}
		if len(f.kids) == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		c := f.kids[0]
		f.kids, f.last = f.kids[1:], c.Name()
		fn(c)
		if c.IsDir() {
			stack = append(stack, visit(c, ""))
		}
	}
	return nil
}

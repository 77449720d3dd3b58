package master

import (
	"fmt"
	"strings"
	"testing"

	"github.com/godfs/godfs/master/namespace"
)

// TestWalkTreeResumes checks that a walk letting go of the lock every few
// inodes visits the same inodes in the same order as one that never does.
func TestWalkTreeResumes(t *testing.T) {
	m, _ := testMaster(t, 0)
	m.mu.Lock()
	makeFiles(t, m, 2500, nil)
	m.mu.Unlock()
	walk := func(hold int) []uint64 {
		defer func(n int) { walkHold = n }(walkHold)
		walkHold = hold
		var ids []uint64
		if err := m.walkTree("/", func(n *namespace.Inode) { ids = append(ids, n.ID()) }); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	whole, pieces := walk(1<<30), walk(7)
	if len(whole) != 2500+3+1 || fmt.Sprint(whole) != fmt.Sprint(pieces) {
		t.Fatalf("walk in one hold visited %d inodes, in holds of 7 %d, or another order", len(whole), len(pieces))
	}
}

// TestWalkTreeWhileChanging walks the tree in holds of 3 inodes while
// files come and go in one directory: every file of the directories left
// alone is visited exactly once.
func TestWalkTreeWhileChanging(t *testing.T) {
	defer func(n int) { walkHold = n }(walkHold)
	walkHold = 3
	m, _ := testMaster(t, 0)
	m.mu.Lock()
	makeFiles(t, m, 3000, nil) // /d0, /d1, /d2: 1000 files each
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			// Names sorting before the files there, so that the walk of
			// the directory is not made longer and longer by them.
			m.mu.Lock()
			e := &namespace.Entry{Type: namespace.OpMkdir, Path: fmt.Sprintf("/d1/a%d", i), FileID: m.mu.tree.NextInodeID()}
			if i%2 == 1 {
				e = &namespace.Entry{Type: namespace.OpDelete, Path: fmt.Sprintf("/d1/f%d", 1000+i), Recursive: true}
			}
			if _, err := m.applyLocked(e); err != nil {
				t.Error(err)
			}
			m.mu.Unlock()
		}
	}()
	seen := map[string]int{}
	for walks, changing := 0, true; changing || walks < 2; walks++ {
		select {
		case <-done:
			changing = false
		default:
		}
		clear(seen)
		err := m.walkTree("/", func(n *namespace.Inode) {
			if p := n.Path(); !n.IsDir() && !strings.HasPrefix(p, "/d1/") {
				seen[p]++
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 2000 {
		t.Fatalf("the walk saw %d files outside the changing directory, want 2000", len(seen))
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("%s visited %d times", p, n)
		}
	}
}

package namespace

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestChildrenAgreeWithSortedList drives a directory's children through
// random and in-order adds, replacements and removals, growing to several
// chunks and shrinking back, and checks after each step that they agree
// with a sorted list of names: every lookup, listing pages from random
// points, the count, and that no chunk is empty or beyond maxChunk.
func TestChildrenAgreeWithSortedList(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var c children
	var model []string
	most := 0 // chunks
	node := func(name string) *Inode {
		n := &Inode{}
		n.keepName(name)
		return n
	}
	for step := range 30000 {
		switch op := rng.IntN(10); {
		case step < 12000 && op < 5 || step >= 12000 && op < 2: // a random name
			name := fmt.Sprintf("r%05d", rng.IntN(20000))
			c.put(node(name))
			if i, found := slices.BinarySearch(model, name); !found {
				model = slices.Insert(model, i, name)
			}
		case step < 12000 && op < 8: // names in order, after every other
			name := fmt.Sprintf("z%06d", step)
			c.put(node(name))
			model = append(model, name)
		default: // a removal, possibly of a name that is not there
			name := fmt.Sprintf("r%05d", rng.IntN(20000))
			if len(model) > 0 && rng.IntN(2) == 0 {
				name = model[rng.IntN(len(model))]
			}
			c.remove(name)
			if i, found := slices.BinarySearch(model, name); found {
				model = slices.Delete(model, i, i+1)
			}
		}
		if step%97 != 0 && step < 29990 {
			continue
		}
		var got []string
		for n := range c.all() {
			got = append(got, n.Name())
		}
		if !slices.Equal(got, model) || c.n != len(model) {
			t.Fatalf("step %d: %d children (count %d), want %d; in order %v", step, len(got), c.n, len(model), slices.IsSorted(got))
		}
		most = max(most, len(c.chunks))
		for _, ch := range c.chunks {
			if len(ch) == 0 || len(ch) > maxChunk {
				t.Fatalf("step %d: a chunk of %d", step, len(ch))
			}
		}
		for range 5 {
			from := ""
			if rng.IntN(3) > 0 {
				from = fmt.Sprintf("r%05d", rng.IntN(20000))
			}
			limit := 1 + rng.IntN(3000)
			page, more := c.after(from, limit)
			i, found := slices.BinarySearch(model, from)
			if found {
				i++
			}
			want := model[i:min(len(model), i+limit)]
			var names []string
			for _, n := range page {
				names = append(names, n.Name())
			}
			if !slices.Equal(names, want) || more != len(model)-i-len(want) {
				t.Fatalf("step %d: %d after %q: %d children and %d more, want %d and %d", step, limit, from, len(names), more, len(want), len(model)-i-len(want))
			}
		}
	}
	if most < 10 || len(c.chunks) >= most {
		t.Fatalf("at most %d chunks, %d at the end (%d children): the test exercises too little", most, len(c.chunks), len(model))
	}
}

// BenchmarkCreateInOneDirectory creates b.N files in one directory, their
// names in no order: each create moves at most a chunk of the directory's
// children, not half of them.
// Run: go test -run '^$' -bench CreateInOneDirectory -benchtime 1000000x ./master/namespace
func BenchmarkCreateInOneDirectory(b *testing.B) {
	tree := New("root", "supergroup", 1)
	order := rand.New(rand.NewPCG(5, 6)).Perm(b.N)
	b.ResetTimer()
	for i, k := range order {
		e := Entry{Index: uint64(i + 1), Type: OpMkdir, Path: fmt.Sprintf("/d%d", k), FileID: tree.NextInodeID()}
		if _, err := tree.Apply(&e); err != nil {
			b.Fatal(err)
		}
	}
}

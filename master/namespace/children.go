package namespace

import (
	"iter"
	"slices"
	"sort"
)

// maxChunk bounds a chunk of a directory's children: adding or removing a
// child moves at most this many pointers (8 KiB), whatever the size of the
// directory. One sorted slice of a million children moved 4 MB a create,
// on average, for names that do not come in order. 1023 and not 1024: Go
// puts an 8-byte header before an object of pointers this big, and 1024
// of them would take the next size class, 9472 bytes.
const maxChunk = 1023

// children are a directory's children sorted by name (as HDFS keeps
// them), 8 bytes a child where a map entry costs about 40: a lookup or a
// listing page is a binary search, and a checkpoint loads them in order.
// They are kept in chunks of at most maxChunk, each sorted and all before
// the next; a directory of up to maxChunk children is one chunk, no longer
// than it needs.
type children struct {
	chunks [][]*Inode // none empty
	n      int
}

// find returns where a child called name is or would go: chunk ci,
// position i in it.
func (c *children) find(name string) (ci, i int, found bool) {
	// The first chunk whose last child does not sort before name.
	ci = sort.Search(len(c.chunks), func(k int) bool { ch := c.chunks[k]; return ch[len(ch)-1].Name() >= name })
	if ci == len(c.chunks) { // after every child: at the end of the last chunk
		if ci == 0 {
			return 0, 0, false
		}
		return ci - 1, len(c.chunks[ci-1]), false
	}
	ch := c.chunks[ci]
	i = sort.Search(len(ch), func(k int) bool { return ch[k].Name() >= name })
	return ci, i, ch[i].Name() == name
}

// get returns the child called name.
func (c *children) get(name string) (*Inode, bool) {
	if ci, i, ok := c.find(name); ok {
		return c.chunks[ci][i], true
	}
	return nil, false
}

// put adds n under n.Name(), replacing a child of that name.
func (c *children) put(n *Inode) {
	ci, i, found := c.find(n.Name())
	if found {
		c.chunks[ci][i] = n
		return
	}
	c.n++
	if len(c.chunks) == 0 {
		c.chunks = [][]*Inode{{n}}
		return
	}
	if ch := c.chunks[ci]; len(ch) == maxChunk {
		if ci == len(c.chunks)-1 && i == len(ch) {
			// Names coming in order: the full chunk stays full.
			c.chunks = append(c.chunks, []*Inode{n})
			return
		}
		half := maxChunk / 2
		right := make([]*Inode, maxChunk-half, maxChunk)
		copy(right, ch[half:])
		clear(ch[half:])
		c.chunks[ci] = ch[:half]
		c.chunks = slices.Insert(c.chunks, ci+1, right)
		if i > half {
			ci, i = ci+1, i-half
		}
	}
	c.chunks[ci] = insertAt(c.chunks[ci], i, n)
}

// insertAt inserts n at i in ch, growing it as append does (to whole
// size classes) but at most to maxChunk.
func insertAt(ch []*Inode, i int, n *Inode) []*Inode {
	if len(ch) == cap(ch) {
		grown := slices.Grow(ch, 1)
		if cap(grown) > maxChunk {
			grown = make([]*Inode, len(ch), maxChunk)
			copy(grown, ch)
		}
		ch = grown
	}
	ch = ch[:len(ch)+1]
	copy(ch[i+1:], ch[i:])
	ch[i] = n
	return ch
}

// appendInOrder adds n after every child (a checkpoint's order).
func (c *children) appendInOrder(n *Inode) {
	c.n++
	if k := len(c.chunks); k > 0 && len(c.chunks[k-1]) < maxChunk {
		c.chunks[k-1] = insertAt(c.chunks[k-1], len(c.chunks[k-1]), n)
		return
	}
	c.chunks = append(c.chunks, []*Inode{n})
}

// remove drops the child called name. A chunk left with less than a
// quarter of maxChunk joins a neighbour it fits in with half of one, so a
// directory emptied of most of its children does not keep their chunks.
func (c *children) remove(name string) {
	ci, i, ok := c.find(name)
	if !ok {
		return
	}
	c.n--
	ch := c.chunks[ci]
	copy(ch[i:], ch[i+1:])
	ch[len(ch)-1] = nil
	ch = ch[:len(ch)-1]
	c.chunks[ci] = ch
	switch {
	case len(ch) == 0:
		c.chunks = slices.Delete(c.chunks, ci, ci+1)
	case len(ch) < maxChunk/4 && ci+1 < len(c.chunks) && len(ch)+len(c.chunks[ci+1]) <= maxChunk/2:
		c.join(ci)
	case len(ch) < maxChunk/4 && ci > 0 && len(ch)+len(c.chunks[ci-1]) <= maxChunk/2:
		c.join(ci - 1)
	}
}

// join makes chunks ci and ci+1 one.
func (c *children) join(ci int) {
	a, b := c.chunks[ci], c.chunks[ci+1]
	joined := make([]*Inode, 0, min(2*(len(a)+len(b)), maxChunk))
	c.chunks[ci] = append(append(joined, a...), b...)
	c.chunks = slices.Delete(c.chunks, ci+1, ci+2)
}

// all yields every child in name order.
func (c *children) all() iter.Seq[*Inode] {
	return func(yield func(*Inode) bool) {
		for _, ch := range c.chunks {
			for _, n := range ch {
				if !yield(n) {
					return
				}
			}
		}
	}
}

// after returns up to max children whose names sort after name (from the
// first for ""), and how many more there are after those.
func (c *children) after(name string, max int) (out []*Inode, more int) {
	ci, i, found := c.find(name)
	if found {
		i++
	}
	before := i
	for _, ch := range c.chunks[:ci] {
		before += len(ch)
	}
	for ; ci < len(c.chunks) && len(out) < max; ci, i = ci+1, 0 {
		ch := c.chunks[ci][i:]
		out = append(out, ch[:min(len(ch), max-len(out))]...)
	}
	return out, c.n - before - len(out)
}

// sortAll sorts children loaded in any order (checkpoints written before
// children were kept sorted).
func (c *children) sortAll() {
	kids := slices.Collect(c.all())
	byName := func(a, b *Inode) int {
		if a.Name() < b.Name() {
			return -1
		} else if a.Name() > b.Name() {
			return 1
		}
		return 0
	}
	if slices.IsSortedFunc(kids, byName) {
		return
	}
	slices.SortFunc(kids, byName)
	*c = children{}
	for _, n := range kids {
		c.appendInOrder(n)
	}
}

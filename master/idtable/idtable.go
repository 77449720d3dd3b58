// Package idtable maps ids that are handed out in sequence (inode ids,
// block ids) to values, in pages of values indexed by id rather than in a
// Go map: no per-entry hashing or overhead (a map entry costs 20-40
// bytes), values stored inline, and pages of pointer-free values are
// never scanned by the garbage collector. Ids that are freed leave holes;
// a page goes when its last value does. A bitmap per page says which ids
// have a value.
package idtable

import (
	"iter"
	"math/bits"
)

// PageSize is how many consecutive ids share a page.
const PageSize = 1024

// Table maps uint64 ids to values of T. The zero Table is empty and
// ready to use; it is not safe for concurrent use.
type Table[T any] struct {
	pages map[uint64]*page[T]
	n     int
}

type page[T any] struct {
	live int
	used [PageSize / 64]uint64 // bit i%64 of used[i/64]: id i has a value
	// values is allocated on its own: PageSize values of a power-of-two
	// size (or 48 bytes) fill whole pages of the Go heap, where with the
	// 136 bytes above they would take one more (16% more for a block).
	values *[PageSize]T
}

func (p *page[T]) has(i uint64) bool { return p.used[i/64]&(1<<(i%64)) != 0 }

// Len is the number of entries.
func (t *Table[T]) Len() int { return t.n }

// Ptr returns a pointer to id's value for reading and changing in place,
// or nil when id has none. The pointer is good until id is deleted.
func (t *Table[T]) Ptr(id uint64) *T {
	if p := t.pages[id/PageSize]; p != nil && p.has(id%PageSize) {
		return &p.values[id%PageSize]
	}
	return nil
}

// Get returns id's value, or the zero T.
func (t *Table[T]) Get(id uint64) T {
	if v := t.Ptr(id); v != nil {
		return *v
	}
	var zero T
	return zero
}

// Put sets id's value and returns a pointer to it as Ptr does.
func (t *Table[T]) Put(id uint64, v T) *T {
	if t.pages == nil {
		t.pages = map[uint64]*page[T]{}
	}
	p := t.pages[id/PageSize]
	if p == nil {
		p = &page[T]{values: new([PageSize]T)}
		t.pages[id/PageSize] = p
	}
	i := id % PageSize
	if !p.has(i) {
		p.used[i/64] |= 1 << (i % 64)
		p.live++
		t.n++
	}
	p.values[i] = v
	return &p.values[i]
}

// Delete removes id's value, if any.
func (t *Table[T]) Delete(id uint64) {
	p := t.pages[id/PageSize]
	i := id % PageSize
	if p == nil || !p.has(i) {
		return
	}
	var zero T
	p.values[i] = zero // drop what it points to
	p.used[i/64] &^= 1 << (i % 64)
	t.n--
	if p.live--; p.live == 0 {
		delete(t.pages, id/PageSize)
	}
}

// All yields every id and a pointer to its value, in no particular order.
// The yielded function may change values in place but not add or delete
// entries.
func (t *Table[T]) All() iter.Seq2[uint64, *T] {
	return func(yield func(uint64, *T) bool) {
		for pn, p := range t.pages {
			for i := range uint64(PageSize) {
				if p.has(i) && !yield(pn*PageSize+i, &p.values[i]) {
					return
				}
			}
		}
	}
}

// Next returns the smallest id at or after from that has a value. Within
// a page it is a bitmap search; finding the next page looks at every
// page's number (a walk in id order costs pages² map visits in all,
// none per id).
func (t *Table[T]) Next(from uint64) (uint64, bool) {
	pn, i := from/PageSize, from%PageSize
	for {
		if p := t.pages[pn]; p != nil {
			for w := i / 64; w < PageSize/64; w++ {
				word := p.used[w]
				if w == i/64 {
					word &^= 1<<(i%64) - 1 // the ids before from
				}
				if word != 0 {
					return pn*PageSize + w*64 + uint64(bits.TrailingZeros64(word)), true
				}
			}
		}
		next, found := uint64(0), false
		for k := range t.pages {
			if k > pn && (!found || k < next) {
				next, found = k, true
			}
		}
		if !found {
			return 0, false
		}
		pn, i = next, 0
	}
}

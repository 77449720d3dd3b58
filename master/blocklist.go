package master

import "iter"

// blockList is the set of blocks one datanode holds, in no order, at 4
// bytes and a bit a block: the reverse of blockInfo.reps. Block ids are handed out
// in sequence, so nearly all of a node's ids share their high 32 bits;
// the list keeps one group of low halves per high half it has seen (one,
// or two across a boundary). A replica's position (replicaRef.pos) is its
// place in its group, which makes removal O(1). Each position also has a
// mark, a bit, for the full block report going on: the replicas it
// reported are marked, and those left unmarked at its end are gone.
type blockList struct {
	groups []blockGroup
	n      int
}

type blockGroup struct {
	high   uint32
	lows   []uint32
	marked []uint64 // bit pos%64 of marked[pos/64]
}

func (l *blockList) Len() int { return l.n }

func (l *blockList) group(high uint32) int {
	for i := range l.groups {
		if l.groups[i].high == high {
			return i
		}
	}
	return -1
}

// add puts id in the list and returns its position in its group.
func (l *blockList) add(id uint64) uint32 {
	i := l.group(uint32(id >> 32))
	if i < 0 {
		i = len(l.groups)
		l.groups = append(l.groups, blockGroup{high: uint32(id >> 32)})
	}
	g := &l.groups[i]
	g.lows = append(g.lows, uint32(id))
	l.n++
	pos := uint32(len(g.lows) - 1)
	if int(pos/64) == len(g.marked) {
		g.marked = append(g.marked, 0)
	}
	return pos
}

// mark marks id, at pos in its group.
func (l *blockList) mark(id uint64, pos uint32) {
	g := &l.groups[l.group(uint32(id>>32))]
	g.marked[pos/64] |= 1 << (pos % 64)
}

// clearMarks unmarks every block.
func (l *blockList) clearMarks() {
	for _, g := range l.groups {
		clear(g.marked)
	}
}

// Unmarked yields every block in the list that is not marked.
func (l *blockList) Unmarked() iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		for _, g := range l.groups {
			for pos, low := range g.lows {
				if g.marked[pos/64]&(1<<(pos%64)) == 0 && !yield(uint64(g.high)<<32|uint64(low)) {
					return
				}
			}
		}
	}
}

// remove takes id, at pos in its group, out of the list by moving the
// group's last block into its place, and returns that block's id if one
// moved (its position is now pos).
func (l *blockList) remove(id uint64, pos uint32) (moved uint64, ok bool) {
	i := l.group(uint32(id >> 32))
	g := &l.groups[i]
	last := len(g.lows) - 1
	lastMark := g.marked[last/64] & (1 << (last % 64))
	g.marked[last/64] &^= 1 << (last % 64)
	if int(pos) != last {
		g.lows[pos] = g.lows[last]
		moved, ok = uint64(g.high)<<32|uint64(g.lows[pos]), true
		g.marked[pos/64] &^= 1 << (pos % 64) // the block moved brings its mark
		if lastMark != 0 {
			g.marked[pos/64] |= 1 << (pos % 64)
		}
	}
	g.lows = g.lows[:last]
	g.marked = g.marked[:(last+63)/64]
	l.n--
	switch {
	case last == 0:
		l.groups[i] = l.groups[len(l.groups)-1]
		l.groups = l.groups[:len(l.groups)-1]
	case cap(g.lows) > 1024 && len(g.lows) < cap(g.lows)/4:
		// Give back what a mass delete freed.
		g.lows = append([]uint32(nil), g.lows...)
		g.marked = append([]uint64(nil), g.marked...)
	}
	return moved, ok
}

// All yields every block id in the list.
func (l *blockList) All() iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		for _, g := range l.groups {
			for _, low := range g.lows {
				if !yield(uint64(g.high)<<32 | uint64(low)) {
					return
				}
			}
		}
	}
}

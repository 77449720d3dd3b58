package idtable

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestAgreesWithMap puts, changes and deletes random ids, clustered as
// sequential ids are, and checks the table against a plain map.
func TestAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var tab Table[uint64]
	model := map[uint64]uint64{}
	for step := range 50000 {
		id := uint64(1<<30) + uint64(rng.IntN(5*PageSize))
		switch rng.IntN(4) {
		case 0, 1:
			v := rng.Uint64()
			tab.Put(id, v)
			model[id] = v
		case 2:
			tab.Delete(id)
			delete(model, id)
		case 3:
			if p := tab.Ptr(id); p != nil {
				*p += 2
				model[id] += 2
			}
		}
		if tab.Len() != len(model) || tab.Get(id) != model[id] {
			t.Fatalf("step %d: len %d, id %d = %d; want len %d, %d", step, tab.Len(), id, tab.Get(id), len(model), model[id])
		}
	}
	// Next walks the ids in order.
	var sorted []uint64
	for id := range model {
		sorted = append(sorted, id)
	}
	slices.Sort(sorted)
	var walked []uint64
	for id, ok := tab.Next(0); ok; id, ok = tab.Next(id + 1) {
		walked = append(walked, id)
	}
	if !slices.Equal(walked, sorted) {
		t.Fatalf("Next walks %d ids, want the %d in the table in order", len(walked), len(sorted))
	}
	seen := 0
	for id, v := range tab.All() {
		if model[id] != *v {
			t.Fatalf("All yields %d = %d, want %d", id, *v, model[id])
		}
		seen++
	}
	if seen != len(model) {
		t.Fatalf("All yields %d entries, want %d", seen, len(model))
	}
	for id := range model {
		tab.Delete(id)
	}
	if tab.Put(7, 0); tab.Ptr(7) == nil || tab.Len() != 1 {
		t.Fatal("a zero value is not an entry")
	}
	tab.Delete(7)
	if tab.Len() != 0 || len(tab.pages) != 0 {
		t.Fatalf("after deleting everything: %d entries on %d pages", tab.Len(), len(tab.pages))
	}
}

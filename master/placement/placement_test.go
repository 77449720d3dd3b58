package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func cluster(racks, perRack int, free int64) []Node {
	var nodes []Node
	for r := 0; r < racks; r++ {
		for i := 0; i < perRack; i++ {
			nodes = append(nodes, Node{ID: fmt.Sprintf("r%dn%d", r, i), Host: fmt.Sprintf("10.0.%d.%d", r, i),
				Rack: fmt.Sprintf("/rack%d", r), Remaining: free, Usable: true})
		}
	}
	return nodes
}

func TestRackSpread(t *testing.T) {
	nodes := cluster(3, 4, 1<<40)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 1000; i++ {
		got := Choose(nodes, Request{N: 3, WriterHost: "10.0.1.2", BlockSize: 1 << 26}, rng)
		if len(got) != 3 {
			t.Fatalf("chose %d nodes", len(got))
		}
		if got[0].Host != "10.0.1.2" {
			t.Fatalf("first replica on %s, not the writer's node", got[0].Host)
		}
		if got[1].Rack == got[0].Rack {
			t.Fatalf("second replica on the writer's rack: %v", got)
		}
		if got[2].Rack != got[1].Rack || got[2].ID == got[1].ID {
			t.Fatalf("third replica not on the second's rack on another node: %v", got)
		}
	}
}

func TestSkipsUnusableAndFullNodes(t *testing.T) {
	nodes := cluster(2, 3, 1<<40)
	nodes[0].Usable = false       // stale or decommissioning
	nodes[1].Remaining = 10 << 20 // too full for a 64 MiB block
	rng := rand.New(rand.NewPCG(2, 2))
	for i := 0; i < 200; i++ {
		for _, n := range Choose(nodes, Request{N: 3, BlockSize: 64 << 20}, rng) {
			if n.ID == nodes[0].ID || n.ID == nodes[1].ID {
				t.Fatalf("chose %s", n.ID)
			}
		}
	}
	// Not enough nodes: as many as there are.
	if got := Choose(nodes, Request{N: 10, BlockSize: 64 << 20}, rng); len(got) != 4 {
		t.Fatalf("chose %d of 4 usable nodes", len(got))
	}
}

func TestSingleRackStillPlaces(t *testing.T) {
	nodes := cluster(1, 3, 1<<40)
	got := Choose(nodes, Request{N: 3, BlockSize: 1}, rand.New(rand.NewPCG(3, 3)))
	if len(got) != 3 || got[0].ID == got[1].ID || got[1].ID == got[2].ID || got[0].ID == got[2].ID {
		t.Fatalf("single rack: %v", got)
	}
}

func TestReReplicationGoesOffRack(t *testing.T) {
	nodes := cluster(2, 3, 1<<40)
	existing := []Node{nodes[0]} // one replica left, on rack 0
	for i := 0; i < 100; i++ {
		got := Choose(nodes, Request{N: 1, Existing: existing, BlockSize: 1}, rand.New(rand.NewPCG(uint64(i), 4)))
		if len(got) != 1 || got[0].Rack == nodes[0].Rack {
			t.Fatalf("re-replica of a rack-0 block placed on %v", got)
		}
	}
}

func TestWeightedByFreeSpace(t *testing.T) {
	nodes := []Node{{ID: "empty", Rack: "/r", Remaining: 900 << 30, Usable: true}, {ID: "full", Rack: "/r", Remaining: 100 << 30, Usable: true}}
	rng := rand.New(rand.NewPCG(5, 5))
	count := map[string]int{}
	for i := 0; i < 10000; i++ {
		count[Choose(nodes, Request{N: 1, BlockSize: 1}, rng)[0].ID]++
	}
	if count["empty"] < 8500 || count["empty"] > 9500 {
		t.Fatalf("choices %v, want about 9:1 for the emptier node", count)
	}
}

func TestExcessKeepsRackSpread(t *testing.T) {
	reps := []Node{{ID: "a", Rack: "/r1", Remaining: 5}, {ID: "b", Rack: "/r1", Remaining: 10}, {ID: "c", Rack: "/r2", Remaining: 1}}
	drop := Excess(reps, 2)
	if len(drop) != 1 || drop[0].ID != "a" {
		t.Fatalf("dropped %v, want a (on the crowded rack, fuller than b)", drop)
	}
}

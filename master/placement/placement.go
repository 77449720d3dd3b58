// Package placement decides which datanodes hold a block's replicas. It is
// HDFS's rack-aware default policy: the first replica on the writer's node
// when the writer is a datanode, the second on another rack, the third on
// the second's rack on another node, any further ones anywhere; nodes that
// are full, stale or being decommissioned are skipped, and among the rest
// the choice is random, weighted by free space so that emptier nodes fill
// up faster.
package placement

import (
	"math/rand/v2"
	"sort"
)

// Node is a candidate datanode as the policy sees it.
type Node struct {
	ID        string // datanode uuid
	Addr      string // host:port, to match the writer
	Host      string // IP, to match the writer's host
	Rack      string
	Remaining int64 // free bytes
	// Usable is false for nodes that must not get new replicas (stale,
	// decommissioning, dead).
	Usable bool
}

// Request describes one placement decision.
type Request struct {
	// N is how many new replicas to place.
	N int
	// WriterHost is the IP of the writing client, "" when unknown or when
	// placing replicas for re-replication.
	WriterHost string
	// Existing are the nodes that already hold the block.
	Existing []Node
	// Exclude are node IDs that must not be chosen (the writer saw them
	// fail, or they already hold the block).
	Exclude map[string]bool
	// BlockSize is the space one replica needs; fuller nodes are skipped.
	BlockSize int64
}

// Choose returns up to req.N nodes for new replicas, in pipeline order.
// It returns fewer when there are not enough usable nodes.
func Choose(nodes []Node, req Request, rng *rand.Rand) []Node {
	taken := map[string]bool{}
	for id := range req.Exclude {
		taken[id] = true
	}
	for _, n := range req.Existing {
		taken[n.ID] = true
	}
	var cands []Node
	for _, n := range nodes {
		if n.Usable && !taken[n.ID] && n.Remaining >= req.BlockSize {
			cands = append(cands, n)
		}
	}
	// Deterministic order before the random choices, for reproducible tests.
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID })
	chosen := append([]Node(nil), req.Existing...)
	var out []Node
	pick := func(ok func(Node) bool) bool {
		n, found := weighted(cands, taken, ok, rng)
		if !found {
			return false
		}
		taken[n.ID] = true
		chosen = append(chosen, n)
		out = append(out, n)
		return true
	}
	any := func(Node) bool { return true }
	for len(out) < req.N {
		switch len(chosen) {
		case 0: // first replica: the writer's own node if it is a datanode
			if req.WriterHost == "" || !pick(func(n Node) bool { return n.Host == req.WriterHost }) {
				if !pick(any) {
					return out
				}
			}
		case 1: // second: another rack
			first := chosen[0].Rack
			if !pick(func(n Node) bool { return n.Rack != first }) && !pick(any) {
				return out
			}
		case 2: // third: the second's rack, or another rack if the first two share one
			r0, r1 := chosen[0].Rack, chosen[1].Rack
			var ok func(Node) bool
			if r0 == r1 {
				ok = func(n Node) bool { return n.Rack != r0 }
			} else {
				ok = func(n Node) bool { return n.Rack == r1 }
			}
			if !pick(ok) && !pick(any) {
				return out
			}
		default:
			if !pick(any) {
				return out
			}
		}
	}
	return out
}

// weighted picks one untaken candidate satisfying ok, with probability
// proportional to its free space.
func weighted(cands []Node, taken map[string]bool, ok func(Node) bool, rng *rand.Rand) (Node, bool) {
	var total float64
	for _, n := range cands {
		if !taken[n.ID] && ok(n) {
			total += weight(n)
		}
	}
	if total == 0 {
		return Node{}, false
	}
	x := rng.Float64() * total
	var last Node
	for _, n := range cands {
		if taken[n.ID] || !ok(n) {
			continue
		}
		last = n
		if x -= weight(n); x < 0 {
			return n, true
		}
	}
	return last, true // rounding
}

// weight is a node's share in the random choice: its free space, with a
// floor so nearly full nodes keep a small chance rather than none.
func weight(n Node) float64 { return float64(max(n.Remaining, 1<<20)) }

// Excess picks which of a block's replicas to delete when it has more than
// want: keep the rack spread (never drop the only replica on a rack when
// another rack has several), then drop from the node with the least free
// space.
func Excess(replicas []Node, want int) []Node {
	rest := append([]Node(nil), replicas...)
	var drop []Node
	for len(rest) > want && len(rest) > 0 {
		perRack := map[string]int{}
		for _, n := range rest {
			perRack[n.Rack]++
		}
		best := -1
		for i, n := range rest {
			crowded := perRack[n.Rack] > 1
			if best < 0 {
				best = i
				continue
			}
			bestCrowded := perRack[rest[best].Rack] > 1
			if crowded != bestCrowded {
				if crowded {
					best = i
				}
				continue
			}
			if n.Remaining < rest[best].Remaining {
				best = i
			}
		}
		drop = append(drop, rest[best])
		rest = append(rest[:best], rest[best+1:]...)
	}
	return drop
}

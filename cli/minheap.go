package cli

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// minHeap makes the Go runtime collect garbage no sooner than the heap
// reaches floor bytes (or twice the live heap, GOGC's default, when that
// is more), as Java's -Xms does for a JVM. A master serving a small
// namespace has a live heap of a few MB, so with GOGC=100 it collected
// every ~0.2 s under load, and every collection delayed the creates
// running through it by 2-4 ms: the paced creates' p99. A master holding
// millions of files is above any floor and unaffected.
//
// It works by setting GOGC again after every collection, from the live
// heap that collection found. An explicit GOGC in the environment is the
// operator's choice and is left alone; GOMEMLIMIT still applies (the
// runtime collects at whichever limit comes first). floor <= 0 does
// nothing. The returned stop restores GOGC=100 from the next collection on.
func minHeap(floor int64) (stop func()) {
	if floor <= 0 || os.Getenv("GOGC") != "" {
		return func() {}
	}
	var stopped atomic.Bool
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var tune func()
	tune = func() {
		if stopped.Load() {
			debug.SetGCPercent(100)
			return
		}
		metrics.Read(sample)
		debug.SetGCPercent(gcPercentFor(floor, sample[0].Value.Uint64()))
		onNextGC(tune)
	}
	tune()
	return func() { stopped.Store(true) }
}

// gcPercentFor is the GOGC that puts the next collection at floor bytes
// of heap for a live heap of live bytes, never below the default 100.
// The runtime's smallest goal is 4 MiB scaled by GOGC (and before the
// first collection there is no live figure), so a live heap below 4 MiB
// counts as 4 MiB: taken as 1 MiB, a 128 MiB floor made the first
// collection wait until the heap held 508 MB.
func gcPercentFor(floor int64, live uint64) int {
	live = max(live, 4<<20)
	if uint64(floor) <= 2*live {
		return 100
	}
	return int(min((uint64(floor)-live)*100/live, 1<<20))
}

// onNextGC calls fn once, after the next garbage collection: it runs as
// the cleanup of an object nothing refers to, which that collection frees.
func onNextGC(fn func()) {
	sentinel := new([16]byte) // 16 bytes: smaller ones share a block with others and may outlive a collection
	runtime.AddCleanup(sentinel, func(struct{}) { fn() }, struct{}{})
}

package cli

import (
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

var sink []byte

// collections counts the garbage collections while 256 MiB of
// short-lived 4 KiB buffers are allocated: half the floor below, and
// enough that a default heap collects many times even when the machine is
// busy (with 64 MiB, a loaded CI run saw 3).
func collections() uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 256<<20/4096; i++ {
		sink = make([]byte, 4096)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

func TestMinHeapDefersCollections(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: minHeap leaves it alone")
	}
	runtime.GC()
	base := collections()
	stop := minHeap(512 << 20) // tunes once at once, then after each collection
	floored := collections()
	stop()
	// The next collection's cleanup, which runs on a goroutine of its
	// own, sets GOGC back to 100.
	gogc := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	for deadline := time.Now().Add(5 * time.Second); ; {
		runtime.GC()
		if metrics.Read(gogc); gogc[0].Value.Uint64() == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d 5 s after stop, want 100", gogc[0].Value.Uint64())
		}
		time.Sleep(time.Millisecond)
	}
	again := collections()
	t.Logf("collections while allocating 256 MiB: %d by default, %d with a 512 MiB floor, %d after stop", base, floored, again)
	if base < 4 || floored > 1 || again < 4 {
		t.Fatalf("collections: %d by default, %d with a 512 MiB floor, %d after stop; want >= 4, <= 1, >= 4", base, floored, again)
	}
}

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		floor int64
		live  uint64
		want  int
	}{
		{128 << 20, 8 << 20, 1500}, // heap up to 128 MiB before collecting
		{128 << 20, 64 << 20, 100}, // twice the live heap is the floor already
		{128 << 20, 1 << 30, 100},  // a big namespace: the default
		{128 << 20, 0, 3100},       // no figure yet: the runtime's 4 MiB minimum
		{128 << 20, 2 << 20, 3100}, // below that minimum too
	} {
		if got := gcPercentFor(c.floor, c.live); got != c.want {
			t.Errorf("gcPercentFor(%d, %d) = %d, want %d", c.floor, c.live, got, c.want)
		}
	}
}

package datanode

import (
	"testing"
	"time"
)

// TestPeriodicReportsSpread checks that datanodes registering together
// send their first periodic full report at points spread over the
// interval, none later than one interval.
func TestPeriodicReportsSpread(t *testing.T) {
	const interval = time.Hour
	var quarters [4]int
	for range 400 {
		d := firstPeriodicReport(interval)
		if d <= 0 || d > interval {
			t.Fatalf("first periodic report after %v, want within (0, %v]", d, interval)
		}
		quarters[min(int(d/(interval/4)), 3)]++
	}
	for q, n := range quarters {
		if n < 50 { // 100 expected in each quarter
			t.Fatalf("%d of 400 first reports in quarter %d of the interval: %v", n, q, quarters)
		}
	}
}

package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/godfstest"
)

var faultIterations = flag.Int("fault.iterations", 100, "iterations of TestFaultInjectionLoop")

// TestFaultInjectionLoop writes files of random sizes while killing a
// random server (a datanode, sometimes the master) with SIGKILL at a random
// moment, and restarting it. Every write that was acknowledged (Close
// returned nil) must read back byte-exact at the end, and the cluster must
// heal to full replication.
func TestFaultInjectionLoop(t *testing.T) { faultLoop(t, *faultIterations, 1<<20) }

// TestFaultInjectionSmallFiles is the loop with files of up to 96 KiB:
// most are one replica record in the datanodes' packs (see
// datanode/pack.go), appended while datanodes die.
func TestFaultInjectionSmallFiles(t *testing.T) { faultLoop(t, max(*faultIterations/2, 1), 96<<10) }

// faultLoop writes n files of up to maxSize bytes, killing a server during
// each, as TestFaultInjectionLoop says.
func faultLoop(t *testing.T, n, maxSize int) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4, BlockSize: "256KiB", DeadAfter: 3 * time.Second})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	acked := map[string][]byte{}
	failed := 0
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("/fault/f%04d", i)
		data := make([]byte, rng.IntN(maxSize))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		c := client.New(cl.Master.Addr)
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			w, err := c.Create(ctx, name, client.CreateParents())
			if err != nil {
				done <- err
				return
			}
			for off := 0; off < len(data); off += 64 << 10 {
				if _, err := w.Write(data[off:min(off+64<<10, len(data))]); err != nil {
					w.Close()
					done <- err
					return
				}
			}
			done <- w.Close()
		}()
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		victim := rng.IntN(len(cl.DataNodes) + 1) // the last one means the master, rarely
		masterKilled := victim == len(cl.DataNodes) && rng.IntN(4) == 0
		switch {
		case masterKilled:
			cl.KillMaster()
		case victim < len(cl.DataNodes):
			cl.KillDataNode(victim)
		}
		err := <-done
		c.Close()
		if err == nil {
			acked[name] = data
		} else {
			failed++
		}
		switch {
		case masterKilled:
			cl.RestartMaster()
			cl.WaitLive(len(cl.DataNodes))
			waitFor(t, 30*time.Second, "safe mode to end", func() bool {
				return strings.Contains(cl.Run(nil, "report").Stdout, "Safe mode: off")
			})
		case victim < len(cl.DataNodes):
			cl.RestartDataNode(victim)
		}
	}
	if len(acked) < n/2 {
		t.Fatalf("only %d of %d writes succeeded (%d failed): the cluster should ride out single failures", len(acked), n, failed)
	}
	t.Logf("%d writes acknowledged, %d failed", len(acked), failed)
	cl.WaitLive(len(cl.DataNodes))
	c := cl.Client()
	for name, data := range acked {
		if got := get(t, c, name); !bytes.Equal(got, data) {
			t.Fatalf("%s: acknowledged write reads back %d bytes, differing from the %d written", name, len(got), len(data))
		}
	}
	waitFor(t, 2*time.Minute, "full replication after the faults", func() bool { return healthy(cl) })
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/godfstest"
)

// listAll walks the namespace and returns "path size" lines.
func listAll(t *testing.T, c *client.Client, dir string) []string {
	t.Helper()
	var out []string
	ents, err := c.ReadDir(context.Background(), dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		if e.IsDir() {
			out = append(out, p+"/")
			out = append(out, listAll(t, c, p)...)
		} else {
			out = append(out, fmt.Sprintf("%s %d", p, e.Size()))
		}
	}
	sort.Strings(out)
	return out
}

// TestConcurrentNamespaceChanges has many clients create, rename and
// delete in the same directories at once. Afterwards every file holds the
// bytes it was written with (its content names it), and a master killed
// with SIGKILL comes back with exactly the same namespace.
func TestConcurrentNamespaceChanges(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	const clients, ops = 8, 40
	var wg sync.WaitGroup
	unexpected := make(chan error, clients*ops)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := client.New(cl.Master.Addr)
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			ctx := context.Background()
			for k := 0; k < ops; k++ {
				dir := fmt.Sprintf("/shared/d%d", rng.IntN(3))
				var err error
				switch rng.IntN(4) {
				case 0, 1: // create a file whose content is its id
					id := fmt.Sprintf("c%d-%d", i, k)
					var w *client.FileWriter
					if w, err = c.Create(ctx, path.Join(dir, id), client.CreateParents()); err == nil {
						w.Write([]byte(id))
						err = w.Close()
					}
				case 2: // rename some entry to another directory
					ents, _ := c.ReadDir(ctx, dir)
					if len(ents) > 0 {
						e := ents[rng.IntN(len(ents))]
						err = c.Rename(ctx, path.Join(dir, e.Name()), path.Join(fmt.Sprintf("/shared/d%d", rng.IntN(3)), e.Name()))
					}
				case 3: // delete some entry
					ents, _ := c.ReadDir(ctx, dir)
					if len(ents) > 0 {
						err = c.Remove(ctx, path.Join(dir, ents[rng.IntN(len(ents))].Name()), false)
					}
				}
				// Races between clients legitimately give these.
				if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrExist) {
					unexpected <- err
				}
			}
		}(i)
	}
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("unexpected error: %v", err)
	}
	c := cl.Client()
	before := listAll(t, c, "/")
	files := 0
	for _, line := range before {
		var p string
		var size int
		if _, err := fmt.Sscanf(line, "%s %d", &p, &size); err != nil {
			continue // a directory
		}
		files++
		if got := get(t, c, p); !bytes.Equal(got, []byte(path.Base(p))) {
			t.Fatalf("%s holds %q", p, got)
		}
	}
	if files == 0 {
		t.Fatal("no file survived: the test exercised nothing")
	}
	cl.KillMaster()
	cl.RestartMaster()
	cl.WaitLive(3)
	after := listAll(t, cl.Client(), "/")
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("namespace changed across a master kill -9:\nbefore %v\nafter  %v", before, after)
	}
}

// TestMasterKill9MidWrites kills the master while clients write: every
// write acknowledged before the kill is there after the restart.
func TestMasterKill9MidWrites(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	killMidWrites(t, cl, 700*time.Millisecond)
}

// TestMasterKill9DuringCheckpoints is the same with a checkpoint every 30
// log entries, written in the background from the log while the clients
// write, so that the kill may land in the middle of one.
func TestMasterKill9DuringCheckpoints(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{CheckpointEvery: 30})
	if log := killMidWrites(t, cl, 3500*time.Millisecond); !strings.Contains(log, "checkpoint written") {
		t.Fatal("no checkpoint was written while the clients wrote: the test exercised nothing")
	}
}

// killMidWrites has 4 clients write files for d, kills the master -9,
// restarts it and checks that every acknowledged write is there. It
// returns the killed master's log.
func killMidWrites(t *testing.T, cl *godfstest.Cluster, d time.Duration) string {
	var mu sync.Mutex
	acked := map[string][]byte{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := client.New(cl.Master.Addr)
			defer c.Close()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("/w%d/f%d", i, k)
				data := bytes.Repeat([]byte{byte(k)}, 1000*k)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				w, err := c.Create(ctx, name, client.CreateParents())
				if err == nil {
					w.Write(data)
					err = w.Close()
				}
				cancel()
				if err == nil {
					mu.Lock()
					acked[name] = data
					mu.Unlock()
				}
			}
		}(i)
	}
	time.Sleep(d)
	cl.KillMaster()
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}
	killed := cl.Master.Log()
	cl.RestartMaster()
	cl.WaitLive(3)
	c := cl.Client()
	for name, data := range acked {
		if got := get(t, c, name); !bytes.Equal(got, data) {
			t.Fatalf("%s: acknowledged before the master was killed, now %d bytes (want %d)", name, len(got), len(data))
		}
	}
	t.Logf("%d acknowledged writes survived the master's kill -9", len(acked))
	return killed
}

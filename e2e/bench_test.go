package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/godfs/godfs/godfstest"
)

// `godfs bench --dev` as a user runs it, on small sizes: the figures its
// flags ask for come out as JSON, with an allocations profile beside
// them, and a count that is not positive is refused in one line.
func TestBenchCommand(t *testing.T) {
	bin := godfstest.Binary(t)
	prof := filepath.Join(t.TempDir(), "allocs.pprof")
	r := godfstest.RunBinary(t, bin, nil, "bench", "--dev", "--json", "--modes", "stream,meta",
		"--size", "1MiB", "--replication", "2", "--stream-clients", "2",
		"--clients", "2", "--meta-ops", "50", "--list-entries", "80", "--memprofile", prof)
	if r.Code != 0 {
		t.Fatalf("bench exited %d: %s", r.Code, r.Stderr)
	}
	var rep struct {
		Results []struct {
			Name  string  `json:"name"`
			Value float64 `json:"value"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("bench --json printed no JSON (%v): %s", err, r.Stdout)
	}
	var names []string
	for _, x := range rep.Results {
		if x.Value <= 0 {
			t.Fatalf("%q measured %v", x.Name, x.Value)
		}
		names = append(names, x.Name)
	}
	for _, want := range []string{"put 1MiB x 2 clients, replication 2", "get 1MiB x 2 clients, replication 2, warm",
		"create+complete (empty files)", "list a 80-entry directory"} {
		if !slices.Contains(names, want) {
			t.Fatalf("no %q among %q", want, names)
		}
	}
	p, err := os.ReadFile(prof)
	if err != nil || len(p) < 1000 || !bytes.HasPrefix(p, []byte{0x1f, 0x8b}) { // pprof's files are gzipped
		t.Fatalf("allocations profile: %d bytes, %v", len(p), err)
	}

	r = godfstest.RunBinary(t, bin, nil, "bench", "--dev", "--stream-clients", "0")
	if r.Code != 2 || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || !strings.Contains(r.Stderr, "--stream-clients") {
		t.Fatalf("--stream-clients 0: exit %d, stderr %q; want 2 and one line naming it", r.Code, r.Stderr)
	}
}

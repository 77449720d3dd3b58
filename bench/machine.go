package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine is what a report was measured on: machines of one kind can
// differ by 2-3x in what goes through their kernel, so a figure carries it.
type Machine struct {
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu,omitempty"`    // the model, where the system tells it
	OS     string `json:"os"`               // GOOS/GOARCH
	Kernel string `json:"kernel,omitempty"` // the kernel's release, where the system tells it
	Go     string `json:"go"`
}

func (m Machine) String() string {
	s := fmt.Sprintf("%d CPUs", m.CPUs)
	if m.CPU != "" {
		s += " (" + m.CPU + ")"
	}
	s += ", " + m.OS
	if m.Kernel != "" {
		s += " " + m.Kernel
	}
	return s + ", " + m.Go
}

// ThisMachine describes the machine the process runs on.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// cpuStolen is the CPU time the hypervisor has taken from this machine's
// CPUs since boot (steal in /proc/stat) and how many CPUs that is over,
// or false where the system does not tell it.
func cpuStolen() (time.Duration, int, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	return parseStolen(string(b))
}

// stealWatch is the start of a span whose share of CPU time stolen is
// wanted.
type stealWatch struct {
	at     time.Time
	stolen time.Duration
	ok     bool
}

func watchSteal() stealWatch {
	stolen, _, ok := cpuStolen()
	return stealWatch{at: time.Now(), stolen: stolen, ok: ok}
}

// pct is the percentage of all CPUs' time since w that was stolen; 0
// where the system does not tell or the span is under stealMinSpan.
func (w stealWatch) pct() float64 {
	elapsed := time.Since(w.at)
	stolen, cpus, ok := cpuStolen()
	if !ok || !w.ok || elapsed < stealMinSpan {
		return 0
	}
	return 100 * float64(stolen-w.stolen) / float64(elapsed*time.Duration(cpus))
}

// stealMinSpan is the shortest span a share stolen is given for: steal
// is counted in whole ticks of 10 ms (userHZ) on each CPU, so one tick
// in a 1 ms span read as 500% of two CPUs; over a second or more a tick
// is at most 1% of one CPU's time.
const stealMinSpan = time.Second

// userHZ is the unit of /proc/stat's times, fixed at 100 a second for
// user space whatever the kernel's own tick.
const userHZ = 100

// parseStolen reads, from the text of /proc/stat, the steal field (the
// 8th number) of the "cpu" line, the sum over the CPUs, and counts the
// CPUs' own lines: a process may be allowed fewer CPUs than the machine
// has (runtime.NumCPU), but the sum is over all of them.
func parseStolen(stat string) (time.Duration, int, bool) {
	line, rest, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	ticks, err := strconv.ParseUint(f[8], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	cpus := 0
	for l := range strings.Lines(rest) {
		if name, _, _ := strings.Cut(l, " "); len(name) > 3 && strings.HasPrefix(name, "cpu") {
			cpus++
		}
	}
	if cpus == 0 {
		return 0, 0, false
	}
	return time.Duration(ticks) * time.Second / userHZ, cpus, true
}

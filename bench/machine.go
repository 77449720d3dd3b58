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
	// Procs is the Go runtime's GOMAXPROCS for the run: the figures move
	// with it on a kernel that packs threads onto one vCPU (the ninth
	// machine's, docs/performance.md).
	Procs int `json:"gomaxprocs"`
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
	return s + fmt.Sprintf(", %s, GOMAXPROCS %d", m.Go, m.Procs)
}

// ThisMachine describes the machine the process runs on.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Procs: runtime.GOMAXPROCS(0)}
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

// cpuTimes is how the machine's CPUs, all of them, have spent their time
// since boot, as far as a measurement's shares need it.
type cpuTimes struct {
	stolen time.Duration // taken by the hypervisor (Linux's steal)
	idle   time.Duration // running nothing: idle, and iowait (idle with I/O pending)
	cpus   int
}

// readCPUTimes reads /proc/stat, or returns false where the system does
// not tell.
func readCPUTimes() (cpuTimes, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	return parseCPUTimes(string(b))
}

// cpuWatch is the start of a span whose shares of CPU time stolen and
// idle are wanted.
type cpuWatch struct {
	at    time.Time
	start cpuTimes
	ok    bool
}

func watchCPU() cpuWatch {
	t, ok := readCPUTimes()
	return cpuWatch{at: time.Now(), start: t, ok: ok}
}

// shares returns the percentages of all CPUs' time since the watch began
// that the hypervisor took and that went idle, or zeros where the system
// does not tell or the span is under cpuMinSpan.
func (w cpuWatch) shares() (stolen, idle float64) {
	t, ok := readCPUTimes()
	if !ok || !w.ok {
		return 0, 0
	}
	return t.sharesSince(w.start, time.Since(w.at))
}

// sharesSince returns the percentages of all CPUs' time over elapsed, from
// start to t, that were stolen and idle: zeros for a span under
// cpuMinSpan, at most 100 (a tick's rounding can carry a share over).
func (t cpuTimes) sharesSince(start cpuTimes, elapsed time.Duration) (stolen, idle float64) {
	if elapsed < cpuMinSpan || t.cpus == 0 {
		return 0, 0
	}
	all := float64(elapsed * time.Duration(t.cpus))
	pct := func(d time.Duration) float64 { return min(100, max(0, 100*float64(d)/all)) }
	return pct(t.stolen - start.stolen), pct(t.idle - start.idle)
}

// cpuMinSpan is the shortest span shares are given for: the times are
// counted in whole ticks of 10 ms (userHZ) on each CPU, so one tick in a
// 1 ms span read as 500% of two CPUs; over a quarter of a second or more
// a tick is at most 4% of one CPU's time, and a metadata figure of 20,000
// ops at 60,000/s still gets its shares.
const cpuMinSpan = 250 * time.Millisecond

// userHZ is the unit of /proc/stat's times, fixed at 100 a second for
// user space whatever the kernel's own tick.
const userHZ = 100

// parseCPUTimes reads, from the text of /proc/stat, the "cpu" line (the
// sums over the CPUs) and counts the CPUs' own lines: a process may be
// allowed fewer CPUs than the machine has (runtime.NumCPU), but the sums
// are over all of them. The line's fields are user, nice, system, idle,
// iowait, irq, softirq and steal, then the guests'.
func parseCPUTimes(stat string) (cpuTimes, bool) {
	line, rest, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, false
	}
	var ticks [3]uint64 // idle, iowait, steal
	for i, field := range []int{4, 5, 8} {
		n, err := strconv.ParseUint(f[field], 10, 64)
		if err != nil {
			return cpuTimes{}, false
		}
		ticks[i] = n
	}
	cpus := 0
	for l := range strings.Lines(rest) {
		if name, _, _ := strings.Cut(l, " "); len(name) > 3 && strings.HasPrefix(name, "cpu") {
			cpus++
		}
	}
	if cpus == 0 {
		return cpuTimes{}, false
	}
	d := func(n uint64) time.Duration { return time.Duration(n) * time.Second / userHZ }
	return cpuTimes{stolen: d(ticks[2]), idle: d(ticks[0] + ticks[1]), cpus: cpus}, true
}

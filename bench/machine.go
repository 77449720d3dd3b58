package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
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

package xfer

import (
	"os"
	"strings"
	"testing"
)

var foldNames = [...]string{foldNone: "stdlib", fold128: "avx", fold256: "avx2", fold512: "avx512"}

// eachFold calls run with each fold this machine can run turned on in
// turn, from the widest it has down to none (the standard library).
func eachFold(run func(name string)) {
	defer func(best int) { fold = best }(fold)
	for f := fold; f >= foldNone; f-- {
		fold = f
		run(foldNames[f])
	}
}

// The fold chosen is the widest the CPU has, as Linux's /proc/cpuinfo
// names its features (a CPU whose VPCLMULQDQ went unseen would run a
// narrower fold at half the speed, and every test would still pass).
func TestFoldIsTheWidestTheCPUHas(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo:", err)
	}
	_, line, _ := strings.Cut(string(b), "\nflags\t")
	line, _, _ = strings.Cut(line, "\n")
	has := map[string]bool{}
	for _, f := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), ":")) {
		has[f] = true
	}
	want := foldNone
	switch {
	case !has["sse4_2"] || !has["avx"] || !has["pclmulqdq"]:
	case has["avx512f"] && has["vpclmulqdq"]:
		want = fold512
	case has["avx2"] && has["vpclmulqdq"]:
		want = fold256
	default:
		want = fold128
	}
	if fold != want {
		t.Fatalf("fold %s, want %s for CPU flags %q", foldNames[fold], foldNames[want], line)
	}
}

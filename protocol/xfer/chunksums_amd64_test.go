package xfer

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

var foldNames = [...]string{foldNone: "stdlib", crc3: "crc3", fold128: "avx", fold256: "avx2", fold512: "avx512"}

// eachFold calls run with each way of summing chunks this machine can run
// turned on in turn, the standard library last.
func eachFold(run func(name string)) {
	defer func(best int) { fold = best }(fold)
	for _, f := range []int{fold512, fold256, fold128, crc3, foldNone} {
		if canRun(f) {
			fold = f
			run(foldNames[f])
		}
	}
}

// The way chosen is the fastest the CPU has, by Linux's /proc/cpuinfo: its
// features and, for the CRC32 instruction's speed, its family and model (a
// CPU whose VPCLMULQDQ went unseen would run a narrower fold at half the
// speed, and every test would still pass).
func TestFoldIsTheFastestTheCPUHas(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo:", err)
	}
	cpu0, _, _ := strings.Cut(string(b), "\n\n")
	field := map[string]string{}
	for _, l := range strings.Split(cpu0, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			field[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	has := map[string]bool{}
	for _, f := range strings.Fields(field["flags"]) {
		has[f] = true
	}
	family, _ := strconv.Atoi(field["cpu family"])
	model, _ := strconv.Atoi(field["model"])
	clmul := has["sse4_2"] && has["avx"] && has["pclmulqdq"]
	want := foldNone
	switch {
	case clmul && has["avx512f"] && has["vpclmulqdq"]:
		want = fold512
	case clmul && has["avx2"] && has["vpclmulqdq"]:
		want = fold256
	case clmul && (family == 0x17 && model < 0x30 || family == 0x18):
		want = fold128
	case has["sse4_2"]:
		want = crc3
	}
	if fold != want {
		t.Fatalf("fold %s, want %s for CPU family %d, model %d, flags %q", foldNames[fold], foldNames[want], family, model, field["flags"])
	}
}

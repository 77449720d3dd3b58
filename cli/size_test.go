package cli

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4096": 4096, "64k": 64 << 10, "64KiB": 64 << 10, "1M": 1 << 20, "1GiB": 1 << 30, "2 MB": -1, "x": -1, "-1": -1, "1.5G": -1} {
		got, err := parseSize(in)
		if (want < 0) != (err != nil) || (err == nil && got != want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestSizeFlagString(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 4096: "4KiB", 1 << 30: "1GiB", 128 << 20: "128MiB", 1000: "1000", 3 << 19: "1536KiB"} {
		s := sizeFlag(n)
		if got := s.String(); got != want {
			t.Errorf("sizeFlag(%d).String() = %q, want %q", n, got, want)
		}
		if back, err := parseSize(want); err != nil || back != n {
			t.Errorf("parseSize(%q) = %d, %v; want %d", want, back, err, n)
		}
	}
}

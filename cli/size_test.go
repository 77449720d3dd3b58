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

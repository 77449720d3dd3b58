package xfer

import "testing"

// eachFold runs f with each fold this machine can run turned on in turn:
// AVX-512's, then the 128-bit one, then none (the standard library).
func eachFold(t *testing.T, f func(t *testing.T)) {
	group, chunk := hasGroupSums, hasChunkSums
	defer func() { hasGroupSums, hasChunkSums = group, chunk }()
	for _, c := range []struct {
		name         string
		group, chunk bool
	}{{"avx512", true, true}, {"avx", false, true}, {"stdlib", false, false}} {
		if c.group && !group || c.chunk && !chunk {
			t.Logf("%s: not on this machine", c.name)
			continue
		}
		hasGroupSums, hasChunkSums = c.group, c.chunk
		t.Run(c.name, f)
	}
}

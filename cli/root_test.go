package cli

import "testing"

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		"first\nsecond": "first; second",
		"unknown command \"x\" for \"godfs\"\n\nDid you mean this?\n\tdatanode\n": "unknown command \"x\" for \"godfs\"; Did you mean this?; datanode",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

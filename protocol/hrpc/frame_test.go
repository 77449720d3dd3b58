package hrpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// A frame's reader tells a stream that ended between frames (io.EOF) from
// one cut inside a frame, its length or its body (io.ErrUnexpectedEOF),
// and refuses lengths beyond MaxFrame before reading them.
func TestReadFrameEnds(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{"whole", []byte{0, 0, 0, 3, 'a', 'b', 'c', 9}, []byte("abc"), nil},
		{"empty", []byte{0, 0, 0, 0}, []byte{}, nil},
		{"nothing", nil, nil, io.EOF},
		{"cut length", []byte{0, 0}, nil, io.ErrUnexpectedEOF},
		{"cut body", []byte{0, 0, 0, 5, 'a'}, nil, io.ErrUnexpectedEOF},
		{"too large", []byte{0x7f, 0xff, 0xff, 0xff}, nil, ErrFrameTooLarge},
	}
	for _, tc := range cases {
		bp := framePool.Get().(*[]byte)
		got, err := readFrameInto(bufio.NewReader(bytes.NewReader(tc.in)), bp)
		if !errors.Is(err, tc.err) || (tc.err == nil && !bytes.Equal(got, tc.want)) {
			t.Errorf("%s: %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

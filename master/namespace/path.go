package namespace

import (
	"fmt"
	"strings"

	"github.com/godfs/godfs/protocol"
)

// MaxPathLen and MaxNameLen bound paths as HDFS does (its defaults are 8000
// and 255).
const (
	MaxPathLen = 8000
	MaxNameLen = 255
)

// SplitPath validates an absolute path and returns its components; "/"
// gives none. Paths must be clean: no empty, "." or ".." components, no
// NUL or ':' (HDFS reserves ':'), no trailing slash except for "/".
func SplitPath(p string) ([]string, error) {
	return appendPath(make([]string, 0, strings.Count(p, "/")), p)
}

// appendPath is SplitPath appending the components to dst: a lookup passes
// space on its stack, so that resolving a path allocates nothing.
func appendPath(dst []string, p string) ([]string, error) {
	if len(p) > MaxPathLen {
		return nil, fmt.Errorf("%w: path longer than %d bytes", protocol.ErrInvalidPath, MaxPathLen)
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%w: %q is not absolute", protocol.ErrInvalidPath, p)
	}
	if p == "/" {
		return dst, nil
	}
	for c := range strings.SplitSeq(p[1:], "/") {
		switch {
		case c == "" || c == "." || c == "..":
			return nil, fmt.Errorf("%w: %q is not clean", protocol.ErrInvalidPath, p)
		case len(c) > MaxNameLen:
			return nil, fmt.Errorf("%w: component longer than %d bytes in %q", protocol.ErrInvalidPath, MaxNameLen, p)
		case strings.ContainsAny(c, ":\x00"):
			return nil, fmt.Errorf("%w: %q contains ':' or NUL", protocol.ErrInvalidPath, p)
		}
		dst = append(dst, c)
	}
	return dst, nil
}

// Join builds the absolute path of components.
func Join(parts []string) string {
	return "/" + strings.Join(parts, "/")
}

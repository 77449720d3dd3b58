//go:build !linux

package oplog

import "os"

// flushBehind does nothing where sync_file_range does not exist.
func flushBehind(f *os.File, off, n int64) {}

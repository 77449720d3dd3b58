//go:build !linux

package oplog

import "os"

// syncData is fsync where fdatasync is not to be had.
func syncData(f *os.File) error { return f.Sync() }

// flushBehind does nothing where sync_file_range does not exist.
func flushBehind(f *os.File, off, n int64) {}

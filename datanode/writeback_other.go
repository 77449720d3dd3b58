//go:build !linux

package datanode

import "os"

// startWriteback is a no-op where sync_file_range does not exist: the
// fsync that finalizes a replica writes it all.
func startWriteback(f *os.File, off, n int64) {}

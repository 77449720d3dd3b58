//go:build !linux

// Package datasync makes a file's data durable without its times: what the
// op log, the datanodes' packs and the bench's disk probe sync with.
package datasync

import (
	"io/fs"
	"os"
)

// File is fsync where fdatasync is not to be had.
func File(f *os.File) error { return f.Sync() }

// writeBack is a no-op where sync_file_range is not to be had: the
// caller's sync writes it all.
func writeBack(*os.File, int64, int64) error { return nil }

// hardLinks is not known here: a file is taken to be shared, and
// RemoveGradually only unlinks it.
func hardLinks(fs.FileInfo) uint64 { return 2 }

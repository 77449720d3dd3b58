//go:build !linux

// Package datasync makes a file's data durable without its times: what the
// op log, the datanodes' packs and the bench's disk probe sync with.
package datasync

import "os"

// File is fsync where fdatasync is not to be had.
func File(f *os.File) error { return f.Sync() }

var zeros = make([]byte, 128<<10)

// WriteZeros writes n zeros to f at off and returns how many it wrote;
// the caller syncs them.
func WriteZeros(f *os.File, off, n int64) (int64, error) {
	var done int64
	for done < n {
		k, err := f.WriteAt(zeros[:min(n-done, int64(len(zeros)))], off+done)
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

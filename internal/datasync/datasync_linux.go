// Package datasync makes a file's data durable without its times: what the
// op log, the datanodes' packs and the bench's disk probe sync with.
package datasync

import (
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// File makes what was written to f durable, with the size that reaches it
// but not the modification time (fdatasync): over blocks the file already
// has, that leaves the file system's journal out of it.
func File(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err == nil {
			return nil
		}
		if err != unix.EINTR {
			return &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
	}
}

// zeroStep is how many zeros WriteZeros writes back at a time. One 4 MiB
// write-back held the op log's fdatasyncs up 2 ms behind it on this VM's
// disk; 128 KiB is ~65 us of its bandwidth.
const zeroStep = 128 << 10

var zeros = make([]byte, zeroStep)

// WriteZeros writes n zeros to f at off, each step written back to the
// disk (not flushed from its cache) before the next is written, so that
// other files' syncs meanwhile wait behind one step, not all of it. It
// returns how many it wrote; the caller syncs them.
func WriteZeros(f *os.File, off, n int64) (int64, error) {
	var done int64
	for done < n {
		k, err := f.WriteAt(zeros[:min(n-done, zeroStep)], off+done)
		if err == nil {
			err = writeBack(f, off+done, int64(k))
		}
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeBack writes f's n bytes at off to the disk and waits for them.
func writeBack(f *os.File, off, n int64) error {
	for {
		err := unix.SyncFileRange(int(f.Fd()), off, n,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		if err != unix.EINTR {
			if err != nil {
				return &fs.PathError{Op: "sync_file_range", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

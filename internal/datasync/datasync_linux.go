// Package datasync makes a file's data durable without its times: what the
// op log, the datanodes' packs and the bench's disk probe sync with. It
// also removes big files without holding up the syncs around them
// (RemoveGradually).
package datasync

import (
	"io/fs"
	"os"
	"syscall"

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

// hardLinks is the number of names the file fi describes has.
func hardLinks(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 2 // unknown: as if shared, never shrunk
}

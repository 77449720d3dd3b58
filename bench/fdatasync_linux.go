package bench

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync is the op log's kind of sync: data, not the modification time.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

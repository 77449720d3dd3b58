package oplog

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData makes what was written to f durable, with the size that reaches
// it but not the modification time: over a preallocated segment that
// leaves the file system's journal out of it (see preallocate).
func syncData(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

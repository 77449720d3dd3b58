package oplog

import (
	"os"

	"golang.org/x/sys/unix"
)

// flushBehind starts writing f's bytes [off, off+n) to disk, first waiting
// until what was started before is on disk (sync_file_range). Errors are
// left to the fsync that follows.
func flushBehind(f *os.File, off, n int64) {
	if off > 0 {
		unix.SyncFileRange(int(f.Fd()), 0, off, unix.SYNC_FILE_RANGE_WAIT_BEFORE)
	}
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

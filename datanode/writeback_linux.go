package datanode

import (
	"os"
	"syscall"
)

// startWriteback asks the kernel to start writing f's bytes [off, off+n)
// to disk without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE), so
// that the fsync that finalizes a replica finds little left to write
// instead of a whole block. HDFS calls this sync-behind-writes.
func startWriteback(f *os.File, off, n int64) {
	const syncFileRangeWrite = 2
	syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, f.Fd(), uintptr(off), uintptr(n), syncFileRangeWrite, 0, 0)
}

package datanode

import (
	"io/fs"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's bytes [off, off+n)
// to disk without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE), so
// that the fsync that finalizes a replica finds little left to write
// instead of a whole block. HDFS calls this sync-behind-writes.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// sizeAt is the size of the file name in directory dir: fstatat on the
// open directory, without resolving the directory's path again per file.
func sizeAt(dir *os.File, name string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, 0); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// openFile opens a replica's file as os.OpenFile does, in two system calls
// instead of six: os.OpenFile tries to add every file to the network
// poller, which a regular file refuses, and sets and clears O_NONBLOCK
// around the attempt. A 4 KiB read opens two files.
func openFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(name, flag|unix.O_CLOEXEC, uint32(perm))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// openDirect opens the file name for writing with O_DIRECT (see stage).
func openDirect(name string) (*os.File, error) {
	return openFile(name, os.O_WRONLY|unix.O_DIRECT, 0)
}

// mapCached maps n bytes of f from off, read-only, if all of them are in
// the page cache, and returns them and the whole mapping to give to
// unmapData.
func mapCached(f *os.File, off int64, n int) (data, mapping []byte, ok bool) {
	page := int64(os.Getpagesize())
	from := off - off%page
	m, err := unix.Mmap(int(f.Fd()), from, int(off-from)+n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, false
	}
	var vec [256]byte
	pages := (len(m) + int(page) - 1) / int(page)
	if pages > len(vec) || mincore(m, vec[:pages]) != nil || !allSet(vec[:pages]) {
		unix.Munmap(m)
		return nil, nil, false
	}
	unix.Madvise(m, unix.MADV_POPULATE_READ) // page tables at once, not a fault per 64 KiB
	return m[off-from:], m, true
}

// mincore fills vec with the residency of m's pages (x/sys/unix has no
// wrapper for it on Linux).
func mincore(m, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}

// allSet reports whether mincore found every page resident.
func allSet(vec []byte) bool {
	for _, v := range vec {
		if v&1 == 0 {
			return false
		}
	}
	return true
}

func unmapData(m []byte) { unix.Munmap(m) }

// punchHole gives the file system blocks of f from off, n bytes, back
// (reading as zeros); the file's size stays.
func punchHole(f *os.File, off, n int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

//go:build !linux

package datanode

import (
	"errors"
	"os"
	"path/filepath"
)

// startWriteback is a no-op where sync_file_range does not exist: the
// fsync that finalizes a replica writes it all.
func startWriteback(f *os.File, off, n int64) {}

// sizeAt is the size of the file name in directory dir.
func sizeAt(dir *os.File, name string) (int64, error) {
	fi, err := os.Stat(filepath.Join(dir.Name(), name))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// openFile is os.OpenFile.
func openFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// openDirect fails: writes go through the page cache (see stage).
func openDirect(name string) (*os.File, error) {
	return nil, errors.ErrUnsupported
}

// mapCached does not map: reads copy the data (see readBlock).
func mapCached(f *os.File, off int64, n int) (data, mapping []byte, ok bool) {
	return nil, nil, false
}

func unmapData(m []byte) {}

// punchHole does nothing: a deleted record keeps its space until its
// whole pack is removed.
func punchHole(f *os.File, off, n int64) error { return nil }

package oplog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/godfs/godfs/internal/datasync"
	"github.com/godfs/godfs/master/namespace"
)

const (
	checkpointName = "checkpoint"
	// oldCheckpointName is a second link to the checkpoint the newest
	// one replaced, until RemoveOldCheckpoint has freed its blocks.
	oldCheckpointName = checkpointName + ".old"
)

// LoadCheckpoint reads the newest checkpoint in dir; with none it returns
// nil and no error. pace, if not nil, is called before every 64 KiB read
// (a background job can sleep there to leave the cores to others).
func LoadCheckpoint(dir string, pace func()) (*namespace.Tree, error) {
	f, err := os.Open(filepath.Join(dir, checkpointName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if pace != nil {
		r = pacedReader{f, pace}
	}
	t, err := namespace.ReadSnapshot(r)
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint %s: %v", ErrCorrupt, f.Name(), err)
	}
	return t, nil
}

// SaveCheckpoint writes t as the new checkpoint atomically: temp file,
// fsync, rename, fsync of the directory. A crash leaves the old checkpoint
// or the new one, never a mix. pace is as for LoadCheckpoint, per 64 KiB
// written. The file goes to disk as it is written (see writeBehind).
//
// The checkpoint it replaces stays, under a second name, until
// RemoveOldCheckpoint: the rename would free all its blocks at once, and
// on a disk that discards freed blocks the op log's syncs wait for that
// (the slowest durable change during a background checkpoint of 1
// million files took 7-17 ms).
func SaveCheckpoint(dir string, t *namespace.Tree, pace func()) error {
	tmp := filepath.Join(dir, checkpointName+".tmp")
	f, err := os.Create(tmp)
	if err == nil {
		var w io.Writer = &writeBehind{f: f}
		if pace != nil {
			w = pacedWriter{w, pace}
		}
		err = t.WriteSnapshot(w)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		// A half-written checkpoint is of no use, and on a full disk
		// its blocks are what the next try needs.
		os.Remove(tmp)
		return fmt.Errorf("save checkpoint: %w", err)
	}
	cur, old := filepath.Join(dir, checkpointName), filepath.Join(dir, oldCheckpointName)
	// A link left by a removal cut short goes at once: its file is no
	// longer read, and two would not fit the one name.
	if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.Link(cur, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.Rename(tmp, cur); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return syncDir(dir)
}

// HasOldCheckpoint tells whether the checkpoint a newer one replaced is
// still in dir, for RemoveOldCheckpoint to free.
func HasOldCheckpoint(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, oldCheckpointName))
	return err == nil
}

// RemoveOldCheckpoint frees the checkpoint the last SaveCheckpoint
// replaced, a step at a time (datasync.RemoveGradually); once stop is
// closed it returns, leaving the rest to a later call.
func RemoveOldCheckpoint(dir string, stop <-chan struct{}) error {
	err := datasync.RemoveGradually(filepath.Join(dir, oldCheckpointName), datasync.RemoveStep, datasync.RemovePause, stop)
	if err != nil {
		return fmt.Errorf("remove old checkpoint: %w", err)
	}
	return nil
}

// pacePiece is how much a paced reader or writer moves between calls to
// pace: ~1 ms of decoding or encoding a snapshot here.
const pacePiece = 64 << 10

type pacedReader struct {
	r    io.Reader
	pace func()
}

func (p pacedReader) Read(b []byte) (int, error) {
	p.pace()
	return p.r.Read(b[:min(len(b), pacePiece)])
}

type pacedWriter struct {
	w    io.Writer
	pace func()
}

func (p pacedWriter) Write(b []byte) (int, error) {
	var n int
	for len(b) > 0 {
		p.pace()
		k, err := p.w.Write(b[:min(len(b), pacePiece)])
		n += k
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

// writeBehind writes a file and has the kernel write each writeBehindChunk
// of it to disk as soon as it is complete, waiting for the one before:
// the file's dirty pages stay under two chunks. Written whole and then
// fsynced, a checkpoint went to the disk in one burst at the end, and the
// op log's syncs, which the clients wait for, queued behind it.
type writeBehind struct {
	f       *os.File
	off     int64 // bytes written
	started int64 // bytes the kernel was told to write to disk
}

const writeBehindChunk = 1 << 20

func (w *writeBehind) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.off += int64(n)
	if w.off-w.started >= writeBehindChunk {
		flushBehind(w.f, w.started, w.off-w.started)
		w.started = w.off
	}
	return n, err
}

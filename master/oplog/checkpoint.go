package oplog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/godfs/godfs/master/namespace"
)

const checkpointName = "checkpoint"

// LoadCheckpoint reads the newest checkpoint in dir; with none it returns
// nil and no error.
func LoadCheckpoint(dir string) (*namespace.Tree, error) {
	f, err := os.Open(filepath.Join(dir, checkpointName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	defer f.Close()
	t, err := namespace.ReadSnapshot(f)
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint %s: %v", ErrCorrupt, f.Name(), err)
	}
	return t, nil
}

// SaveCheckpoint writes t as the new checkpoint atomically: temp file,
// fsync, rename, fsync of the directory. A crash leaves the old checkpoint
// or the new one, never a mix.
func SaveCheckpoint(dir string, t *namespace.Tree) error {
	tmp := filepath.Join(dir, checkpointName+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := t.WriteSnapshot(f); err != nil {
		f.Close()
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, checkpointName)); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return syncDir(dir)
}

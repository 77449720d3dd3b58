package datasync

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestRemoveGradually(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 10<<10+5), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RemoveGradually(path, 1<<10, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
	// Gone already: no error.
	if err := RemoveGradually(path, 1<<10, 0, nil); err != nil {
		t.Fatalf("a missing file: %v", err)
	}
	// Stopped: the file stays, shrunk by one step at most.
	if err := os.WriteFile(path, make([]byte, 10<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	close(stop)
	if err := RemoveGradually(path, 1<<10, 0, stop); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 9<<10 {
		t.Fatalf("after a stop: %v, %v", fi, err)
	}
}

// A file with a second name is unlinked, never shrunk: the other name
// keeps all of it.
func TestRemoveGraduallyLeavesAnotherName(t *testing.T) {
	dir := t.TempDir()
	path, other := filepath.Join(dir, "f"), filepath.Join(dir, "g")
	if err := os.WriteFile(path, make([]byte, 10<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, other); err != nil {
		t.Fatal(err)
	}
	if err := RemoveGradually(path, 1<<10, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
	if fi, err := os.Stat(other); err != nil || fi.Size() != 10<<10 {
		t.Fatalf("the other name after the removal: %v, %v", fi, err)
	}
}

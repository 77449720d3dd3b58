// Package smalldisk gives tests a file system they can fill: a tmpfs of a
// few MiB mounted for the test, so that a full disk (ENOSPC) is a real
// one, met by the code the way it meets it in production.
package smalldisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// New mounts a tmpfs of size bytes in a new temporary directory and
// returns its path; see Mount.
func New(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	Mount(t, dir, size)
	return dir
}

// Mount mounts a tmpfs of size bytes on dir, making dir if needed; it is
// unmounted when the test ends. It skips the test where mounting is not
// allowed (not Linux, not root).
func Mount(t testing.TB, dir string, size int64) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("a small file system to fill needs Linux's tmpfs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("a small file system to fill needs mount (root): %v: %s", err, out)
	}
	// Lazily, so that a process the test killed but whose files are not
	// closed yet does not leave it mounted.
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// Fill writes a file in dir until the file system is full and returns its
// path: removing it gives the space back.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for len(buf) > 0 {
		n, err := f.Write(buf)
		switch {
		case errors.Is(err, syscall.ENOSPC) && n == 0:
			buf = buf[:len(buf)/2] // down to the last bytes free
		case err != nil && !errors.Is(err, syscall.ENOSPC):
			t.Fatal(err)
		}
	}
	return name
}

//go:build !amd64

package xfer

import "testing"

// eachFold runs f with the standard library's CRC32C, the only one here.
func eachFold(t *testing.T, f func(t *testing.T)) { t.Run("stdlib", f) }

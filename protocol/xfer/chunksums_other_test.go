//go:build !amd64

package xfer

// eachFold calls run once: the standard library's CRC32C is the only one
// here.
func eachFold(run func(name string)) { run("stdlib") }

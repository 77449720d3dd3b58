// Command godfs is the one godfs binary: servers (master, datanode, dev)
// and file commands. See `godfs --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/godfs/godfs/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

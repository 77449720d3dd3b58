// Package client is godfs's Go API. A Client talks Hadoop RPC to the
// master and DataTransferProtocol to datanodes, the same protocols HDFS
// clients speak, so it works against godfs and HDFS alike.
//
// A Client is safe for concurrent use and meant to be reused. Errors for
// paths are *fs.PathError values that unwrap to fs.ErrNotExist,
// fs.ErrExist, ErrNotDir, ErrNotEmpty and the other sentinels below, so
// callers use errors.Is.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// Errors callers branch on, besides fs.ErrNotExist, fs.ErrExist and
// fs.ErrPermission.
var (
	ErrNotDir      = protocol.ErrNotDir
	ErrIsDir       = protocol.ErrIsDir
	ErrNotEmpty    = protocol.ErrNotEmpty
	ErrInvalidPath = protocol.ErrInvalidPath
	ErrNoDatanodes = protocol.ErrNoDatanodes
	ErrLeaseHeld   = protocol.ErrLeaseHeld
	ErrCorruption  = protocol.ErrCorruption
	// ErrUnreachable: the master could not be reached.
	ErrUnreachable = errors.New("master unreachable")
)

// Option configures a Client.
type Option func(*Client)

// WithUser sets the user the client acts as (SIMPLE auth). Default: the
// HADOOP_USER_NAME environment variable, else the OS user.
func WithUser(u string) Option { return func(c *Client) { c.user = u } }

// WithReplication sets the default replication of files the client creates
// (0 = the master's default).
func WithReplication(n int) Option { return func(c *Client) { c.replication = n } }

// WithBlockSize sets the default block size of files the client creates
// (0 = the master's default).
func WithBlockSize(n int64) Option { return func(c *Client) { c.blockSize = n } }

// Client is a connection to a godfs (or HDFS) cluster.
type Client struct {
	addr        string
	master      *hrpc.Client
	adminOnce   sync.Once
	admin       *hrpc.Client // godfs's admin protocol, on the same master
	name        string       // the client name leases are held under
	user        string
	replication int
	blockSize   int64

	peers xfer.Peers // kept datanode connections for reads and writes

	leaseMu sync.Mutex
	writers int           // open writers; the lease is renewed while > 0
	renewer chan struct{} // closed to stop the lease renewer; nil when none runs
}

// New returns a client for the master at addr ("host:port", or a
// comma-separated list). It connects lazily, on the first call.
func New(addr string, opts ...Option) *Client {
	c := &Client{}
	for _, o := range opts {
		o(c)
	}
	if c.user == "" {
		c.user = defaultUser()
	}
	r := make([]byte, 8)
	rand.Read(r)
	c.name = "godfs_client_" + hex.EncodeToString(r)
	c.addr = addr
	c.master = hrpc.NewClient(addr, hrpc.ClientOptions{Protocol: protocol.ClientProtocol, User: c.user})
	return c
}

func defaultUser() string {
	if u := os.Getenv("HADOOP_USER_NAME"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "godfs"
}

// Close releases the client's connections.
func (c *Client) Close() error {
	c.leaseMu.Lock()
	if c.renewer != nil {
		close(c.renewer)
		c.renewer = nil
	}
	c.leaseMu.Unlock()
	c.peers.Close()
	c.adminOnce.Do(func() {})
	if c.admin != nil {
		c.admin.Close()
	}
	return c.master.Close()
}

// call invokes a master RPC, marking connection failures ErrUnreachable.
func (c *Client) call(ctx context.Context, method string, req, resp proto.Message) error {
	err := c.master.Call(ctx, method, req, resp)
	if err == nil {
		return nil
	}
	if isNetErr(err) {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.master.Addr(), err)
	}
	return err
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func pathErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var re *hrpc.RemoteError
	if errors.As(err, &re) {
		return &fs.PathError{Op: op, Path: p, Err: re}
	}
	return err
}

// FileInfo describes a file or directory; it implements fs.FileInfo.
type FileInfo struct {
	name        string
	size        int64
	mode        fs.FileMode
	mtime       time.Time
	Atime       time.Time
	Owner       string
	Group       string
	Replication int
	BlockSize   int64
	FileID      uint64
}

func (fi *FileInfo) Name() string       { return fi.name }
func (fi *FileInfo) Size() int64        { return fi.size }
func (fi *FileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *FileInfo) ModTime() time.Time { return fi.mtime }
func (fi *FileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *FileInfo) Sys() any           { return fi }

func newFileInfo(st *pb.HdfsFileStatusProto, name string) *FileInfo {
	fi := &FileInfo{name: name, size: int64(st.GetLength()), mode: fs.FileMode(st.GetPermission().GetPerm() & 0o777),
		mtime: time.UnixMilli(int64(st.GetModificationTime())), Atime: time.UnixMilli(int64(st.GetAccessTime())),
		Owner: st.GetOwner(), Group: st.GetGroup(), Replication: int(st.GetBlockReplication()),
		BlockSize: int64(st.GetBlocksize()), FileID: st.GetFileId()}
	if st.GetPermission().GetPerm()&0o1000 != 0 {
		fi.mode |= fs.ModeSticky
	}
	if st.GetFileType() == pb.HdfsFileStatusProto_IS_DIR {
		fi.mode |= fs.ModeDir
	}
	return fi
}

// Stat returns the FileInfo of name.
func (c *Client) Stat(ctx context.Context, name string) (*FileInfo, error) {
	resp := &pb.GetFileInfoResponseProto{}
	if err := c.call(ctx, "getFileInfo", &pb.GetFileInfoRequestProto{Src: proto.String(name)}, resp); err != nil {
		return nil, pathErr("stat", name, err)
	}
	if resp.Fs == nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return newFileInfo(resp.Fs, path.Base(name)), nil
}

// ReadDir lists a directory, sorted by name. It pages through large
// directories.
func (c *Client) ReadDir(ctx context.Context, name string) ([]*FileInfo, error) {
	var out []*FileInfo
	after := []byte{}
	for {
		resp := &pb.GetListingResponseProto{}
		req := &pb.GetListingRequestProto{Src: proto.String(name), StartAfter: after, NeedLocation: proto.Bool(false)}
		if err := c.call(ctx, "getListing", req, resp); err != nil {
			return nil, pathErr("readdir", name, err)
		}
		if resp.DirList == nil {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
		}
		for _, st := range resp.DirList.GetPartialListing() {
			out = append(out, newFileInfo(st, string(st.GetPath())))
		}
		if resp.DirList.GetRemainingEntries() == 0 || len(resp.DirList.GetPartialListing()) == 0 {
			break
		}
		after = resp.DirList.GetPartialListing()[len(resp.DirList.GetPartialListing())-1].GetPath()
	}
	if len(out) == 1 && out[0].name == "" { // name is a file
		out[0].name = path.Base(name)
	}
	return out, nil
}

// Mkdir creates a directory; with parents, missing parents too, and an
// existing directory is not an error (mkdir -p).
func (c *Client) Mkdir(ctx context.Context, name string, perm fs.FileMode, parents bool) error {
	if !parents {
		// HDFS's mkdirs succeeds on an existing directory; mkdir must not.
		if _, err := c.Stat(ctx, name); err == nil {
			return &fs.PathError{Op: "mkdir", Path: name, Err: fs.ErrExist}
		}
	}
	req := &pb.MkdirsRequestProto{Src: proto.String(name), Masked: &pb.FsPermissionProto{Perm: proto.Uint32(uint32(perm.Perm()))},
		CreateParent: proto.Bool(parents)}
	return pathErr("mkdir", name, c.call(ctx, "mkdirs", req, &pb.MkdirsResponseProto{}))
}

// Rename moves oldname to newname atomically. newname must not exist.
func (c *Client) Rename(ctx context.Context, oldname, newname string) error {
	req := &pb.Rename2RequestProto{Src: proto.String(oldname), Dst: proto.String(newname), OverwriteDest: proto.Bool(false)}
	return pathErr("rename", oldname, c.call(ctx, "rename2", req, &pb.Rename2ResponseProto{}))
}

// Remove deletes a file or an empty directory; with recursive, a directory
// and everything under it.
func (c *Client) Remove(ctx context.Context, name string, recursive bool) error {
	resp := &pb.DeleteResponseProto{}
	if err := c.call(ctx, "delete", &pb.DeleteRequestProto{Src: proto.String(name), Recursive: proto.Bool(recursive)}, resp); err != nil {
		return pathErr("remove", name, err)
	}
	if !resp.GetResult() {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	return nil
}

// Chmod sets the permission bits of name.
func (c *Client) Chmod(ctx context.Context, name string, mode fs.FileMode) error {
	req := &pb.SetPermissionRequestProto{Src: proto.String(name), Permission: &pb.FsPermissionProto{Perm: proto.Uint32(uint32(mode.Perm()))}}
	return pathErr("chmod", name, c.call(ctx, "setPermission", req, &pb.SetPermissionResponseProto{}))
}

// ContentSummary is what du reports for a path.
type ContentSummary struct {
	Length        int64 // bytes in files
	Files, Dirs   int64
	SpaceConsumed int64 // bytes on disk counting replication
}

// Du summarizes the space used under name.
func (c *Client) Du(ctx context.Context, name string) (ContentSummary, error) {
	resp := &pb.GetContentSummaryResponseProto{}
	if err := c.call(ctx, "getContentSummary", &pb.GetContentSummaryRequestProto{Path: proto.String(name)}, resp); err != nil {
		return ContentSummary{}, pathErr("du", name, err)
	}
	s := resp.GetSummary()
	return ContentSummary{Length: int64(s.GetLength()), Files: int64(s.GetFileCount()),
		Dirs: int64(s.GetDirectoryCount()), SpaceConsumed: int64(s.GetSpaceConsumed())}, nil
}

// DatanodeInfo describes a datanode as the master sees it.
type DatanodeInfo struct {
	UUID          string
	Addr          string // data transfer address
	Rack          string
	Capacity      int64
	Used          int64
	Remaining     int64
	Blocks        int
	LastHeartbeat time.Time
	Live          bool
	State         string // live, stale, dead (from Report)
	Admin         string // NORMAL, DECOMMISSION_INPROGRESS, DECOMMISSIONED
	Transfers     int    // block copies in flight from it (from Report)
}

// Datanodes lists the datanodes the master knows, live and dead.
func (c *Client) Datanodes(ctx context.Context) ([]DatanodeInfo, error) {
	var out []DatanodeInfo
	for _, typ := range []pb.DatanodeReportTypeProto{pb.DatanodeReportTypeProto_LIVE, pb.DatanodeReportTypeProto_DEAD} {
		resp := &pb.GetDatanodeReportResponseProto{}
		if err := c.call(ctx, "getDatanodeReport", &pb.GetDatanodeReportRequestProto{Type: typ.Enum()}, resp); err != nil {
			return nil, err
		}
		for _, di := range resp.GetDi() {
			info := datanodeInfo(di)
			info.Live = typ == pb.DatanodeReportTypeProto_LIVE
			out = append(out, info)
		}
	}
	return out, nil
}

// ServerDefaults returns the master's default block size and replication.
func (c *Client) ServerDefaults(ctx context.Context) (blockSize int64, replication int, err error) {
	resp := &pb.GetServerDefaultsResponseProto{}
	if err := c.call(ctx, "getServerDefaults", &pb.GetServerDefaultsRequestProto{}, resp); err != nil {
		return 0, 0, err
	}
	d := resp.GetServerDefaults()
	return int64(d.GetBlockSize()), int(d.GetReplication()), nil
}

// leaseRenewInterval is how often a client with open writers renews its
// lease (HDFS renews at half the 60s soft limit).
const leaseRenewInterval = 30 * time.Second

// writerOpened and writerClosed count the open writers. The lease renewer
// runs while there are any and stays for up to an interval after the last
// closes (as HDFS's LeaseRenewer does): a client writing many small files
// one after the other then does not start and stop it for each (4% of the
// CPU of BenchmarkCreateComplete).
func (c *Client) writerOpened() {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	c.writers++
	if c.renewer == nil {
		c.renewer = make(chan struct{})
		go c.renewLeases(c.renewer)
	}
}

func (c *Client) writerClosed() {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	c.writers--
}

func (c *Client) renewLeases(stop chan struct{}) {
	t := time.NewTicker(leaseRenewInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.leaseMu.Lock()
		if c.renewer != stop || c.writers == 0 { // closed, or no writer for a while
			if c.renewer == stop {
				c.renewer = nil
			}
			c.leaseMu.Unlock()
			return
		}
		c.leaseMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.call(ctx, "renewLease", &pb.RenewLeaseRequestProto{ClientName: proto.String(c.name)}, &pb.RenewLeaseResponseProto{})
		cancel()
	}
}

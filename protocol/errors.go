// Package protocol holds what both ends of godfs's wire protocols share: the
// generated HDFS message types (package pb), the protocol names and versions,
// and the one table that maps godfs's error sentinels to the Java exception
// class names that HDFS clients branch on.
package protocol

import (
	"errors"
	"io/fs"
)

// Namespace errors. fs.ErrNotExist, fs.ErrExist and fs.ErrPermission are
// used as they are; these cover the rest of what a file system reports.
var (
	// ErrNotDir: a path component that must be a directory is a file.
	ErrNotDir = errors.New("not a directory")
	// ErrIsDir: a file operation was aimed at a directory.
	ErrIsDir = errors.New("is a directory")
	// ErrNotEmpty: a non-recursive delete of a directory with children.
	ErrNotEmpty = errors.New("directory is not empty")
	// ErrInvalidPath: a path that is not absolute, has empty or dot
	// components, or bad characters.
	ErrInvalidPath = errors.New("invalid path")
	// ErrInvalidArgument: a size, replication or other argument out of range.
	ErrInvalidArgument = errors.New("invalid argument")
)

// Write-path errors.
var (
	// ErrNoDatanodes: the master has no live datanode with room to place
	// a block on.
	ErrNoDatanodes = errors.New("no datanode can take a block")
	// ErrLeaseHeld: another client is writing the file.
	ErrLeaseHeld = errors.New("file is being written by another client")
	// ErrNoLease: the client does not hold the lease on a file it tries to
	// write (the file was closed, deleted or recovered meanwhile).
	ErrNoLease = errors.New("no lease on file")
	// ErrSafeMode: the master refuses changes while it starts up.
	ErrSafeMode = errors.New("master is in safe mode")
)

// Protocol errors.
var (
	// ErrUnsupported: a method or operation godfs does not implement yet.
	ErrUnsupported = errors.New("operation not supported")
	// ErrCorruption: data failed its checksum. Callers use errors.Is to
	// decide to report the replica and try another.
	ErrCorruption = errors.New("checksum mismatch")
)

// exceptionClasses is the one table between godfs errors and the Java
// exception class names HDFS clients (Hadoop's own, colinmarc/hdfs) branch
// on. The first entry for a class wins when mapping back.
var exceptionClasses = []struct {
	err   error
	class string
}{
	{fs.ErrNotExist, "java.io.FileNotFoundException"},
	{fs.ErrExist, "org.apache.hadoop.fs.FileAlreadyExistsException"},
	{fs.ErrPermission, "org.apache.hadoop.security.AccessControlException"},
	{ErrNotDir, "org.apache.hadoop.fs.ParentNotDirectoryException"},
	{ErrNotEmpty, "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException"},
	{ErrIsDir, "org.apache.hadoop.fs.PathIsDirectoryException"},
	{ErrInvalidPath, "org.apache.hadoop.fs.InvalidPathException"},
	{ErrInvalidArgument, "org.apache.hadoop.HadoopIllegalArgumentException"},
	{ErrLeaseHeld, "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException"},
	{ErrNoLease, "org.apache.hadoop.hdfs.server.namenode.LeaseExpiredException"},
	{ErrSafeMode, "org.apache.hadoop.hdfs.server.namenode.SafeModeException"},
	{ErrNoDatanodes, "org.apache.hadoop.ipc.RemoteException"},
	{ErrUnsupported, "java.lang.UnsupportedOperationException"},
	{ErrCorruption, "org.apache.hadoop.fs.ChecksumException"},
}

// IOExceptionClass is what errors without a more precise class map to.
const IOExceptionClass = "java.io.IOException"

// ExceptionClass returns the Java exception class name for err.
func ExceptionClass(err error) string {
	for _, e := range exceptionClasses {
		if errors.Is(err, e.err) {
			return e.class
		}
	}
	return IOExceptionClass
}

// ErrorForClass returns the godfs sentinel for a Java exception class name,
// or nil when the class has no sentinel. Clients rebuild errors from the
// class name, never from the message text.
func ErrorForClass(class string) error {
	for _, e := range exceptionClasses {
		if e.class == class {
			return e.err
		}
	}
	return nil
}

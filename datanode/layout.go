package datanode

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// A finalized replica of at most packMax bytes is a record in a pack file
// (see pack.go). A bigger one is on disk in one of two layouts.
//
// HDFS's, for replicas of more than inlineMax bytes: blk_<id> holds the
// bytes and blk_<id>_<genstamp>.meta a 7-byte header (version 1, checksum
// type, bytes per checksum) and then one big-endian CRC per 512-byte chunk.
//
// One file, for replicas of more than packMax and at most inlineMax bytes:
// blk_<id>_<genstamp>.block holds the bytes, then their CRCs, then the same
// 7-byte header. A small file at replication 3 is then three files to
// create, sync, rename and delete instead of six; on the file systems seen
// here creating a file costs more than writing 4 KiB to it. The replica's
// length follows from the file's size (see inlineLength), so indexing it
// at start is one stat, as for the other layout.
//
// A replica being written starts in memory, goes to a file in the
// one-file layout once it outgrows packMax, its checksums still kept in
// memory, and moves to HDFS's (writes its .meta file) once it outgrows
// inlineMax; from then on its data goes to disk past the page
// cache (direct.go). Replicas being written live in rbw/ as blk_<id> (and
// blk_<id>_<genstamp>.meta) and move to finalized/ once complete and synced.
const (
	metaVersion    = 1
	metaHeaderSize = 7
	// inlineMax is the largest replica kept in one file: its checksums
	// (4 KiB) are what a writer holds in memory until it finishes.
	inlineMax = 512 << 10
)

func blockFileName(id uint64) string { return "blk_" + strconv.FormatUint(id, 10) }
func metaFileName(id, gs uint64) string {
	return fmt.Sprintf("blk_%d_%d.meta", id, gs)
}
func inlineFileName(id, gs uint64) string {
	return fmt.Sprintf("blk_%d_%d.block", id, gs)
}

// inlineSize is the size of the one-file replica of length bytes.
func inlineSize(length int64) int64 {
	return length + xfer.NumChunks(length)*protocol.ChecksumSize + metaHeaderSize
}

// inlineLength is the length of the replica in a one-file replica of size
// bytes, the inverse of inlineSize; ok is false for a size that no
// replica of at most inlineMax bytes has (a damaged file).
func inlineLength(size int64) (length int64, ok bool) {
	s := size - metaHeaderSize
	if s < 0 {
		return 0, false
	}
	// Each full chunk takes 512+4 bytes, a partial last one its bytes + 4.
	const perChunk = protocol.BytesPerChecksum + protocol.ChecksumSize
	chunks := (s + perChunk - 1) / perChunk
	length = s - chunks*protocol.ChecksumSize
	return length, length >= 0 && length <= inlineMax && xfer.NumChunks(length) == chunks
}

// parseReplicaName parses blk_<id>_<genstamp>.meta (the checksum file of
// HDFS's layout, which marks such a replica complete) and
// blk_<id>_<genstamp>.block (a one-file replica).
func parseReplicaName(name string) (id, gs uint64, inline, ok bool) {
	rest, ok := strings.CutPrefix(name, "blk_")
	if !ok {
		return 0, 0, false, false
	}
	if r, found := strings.CutSuffix(rest, ".meta"); found {
		rest = r
	} else if r, found := strings.CutSuffix(rest, ".block"); found {
		rest, inline = r, true
	} else {
		return 0, 0, false, false
	}
	ids, gss, ok := strings.Cut(rest, "_")
	if !ok {
		return 0, 0, false, false
	}
	id, err1 := strconv.ParseUint(ids, 10, 64)
	gs, err2 := strconv.ParseUint(gss, 10, 64)
	return id, gs, inline, err1 == nil && err2 == nil
}

// metaHeader is the 7-byte header of a replica's checksums of type cs.
func metaHeader(cs pb.ChecksumTypeProto) []byte {
	hdr := make([]byte, metaHeaderSize)
	binary.BigEndian.PutUint16(hdr[:2], metaVersion)
	hdr[2] = byte(cs)
	binary.BigEndian.PutUint32(hdr[3:], protocol.BytesPerChecksum)
	return hdr
}

// readMetaHeader reads the checksum header of block id at off in f and
// returns the checksum table it names; a header naming none wraps
// protocol.ErrCorruption.
func readMetaHeader(f io.ReaderAt, off int64, id uint64) (*crc32.Table, error) {
	hdr := make([]byte, metaHeaderSize)
	if _, err := f.ReadAt(hdr, off); err != nil {
		return nil, fmt.Errorf("read block %d checksum header: %w", id, err)
	}
	tab, err := xfer.ChecksumTable(pb.ChecksumTypeProto(hdr[2]))
	if err != nil || binary.BigEndian.Uint32(hdr[3:]) != protocol.BytesPerChecksum {
		return nil, fmt.Errorf("block %d: bad checksum header %x: %w", id, hdr, protocol.ErrCorruption)
	}
	return tab, nil
}

// BlockBytes is how many bytes of a block a finalized replica's file of
// this name and size holds, from its start: all of a data file in HDFS's
// layout, the data part of a one-file replica; ok is false for any other
// file. It is for tools and tests that look at a datanode's disks.
func BlockBytes(name string, size int64) (n int64, ok bool) {
	if _, _, inline, ok := parseReplicaName(name); ok && inline {
		return inlineLength(size)
	}
	if id, ok := strings.CutPrefix(name, "blk_"); ok {
		if _, err := strconv.ParseUint(id, 10, 64); err == nil {
			return size, true
		}
	}
	return 0, false
}

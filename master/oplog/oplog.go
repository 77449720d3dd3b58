// Package oplog is the master's durable log of namespace entries and its
// checkpoints. The log is a sequence of segment files "log-<first index>";
// each record is a 4-byte length, a 4-byte CRC32C of the payload and the
// entry in its binary form (namespace.Entry.AppendBinary; logs written
// before it hold JSON entries, which still replay). A checkpoint is a
// snapshot of the namespace at some index; restart loads it and replays
// only the entries after it.
//
// Durability contract: Append only buffers. Sync(i) MUST NOT return until
// every entry up to index i is on disk (fdatasynced); concurrent Syncs share
// one sync (group commit).
//
// A segment is kept filled with zeros ahead of its last record (see
// preallocate); a record header of all zeros marks the end of the records.
package oplog

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/godfs/godfs/internal/datasync"
	"github.com/godfs/godfs/master/namespace"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maxRecord bounds one record; anything larger is corruption.
const maxRecord = 16 << 20

// preallocate is how far ahead of its last record a segment is filled with
// zeros. Records then overwrite blocks the file already has, so syncing
// them records no new size or block allocation and leaves the file
// system's journal out of it: 1.3-1.8x the syncs a second of appending to
// the end of the file, on this VM's ext4.
const preallocate = 4 << 20

// switchAt is how few zeroed bytes past the last record make a sync go on
// in the spare segment: a segment takes preallocate-switchAt bytes of
// records, and each spare made (4 MiB written and synced while the master
// serves) held up the op log's syncs by 2-3 ms, so the fewer the better.
// What is appended between two syncs seldom comes near it; if it passes
// the zeros, that sync records the file's new size, slower but as safe.
const switchAt = 512 << 10

// ErrCorrupt marks a log or checkpoint that cannot be read back.
var ErrCorrupt = errors.New("op log corrupt")

// Log is the op log in one directory. Append and Roll must be called by one
// goroutine at a time (the master holds its lock); Sync may be called
// concurrently.
type Log struct {
	dir string
	log *slog.Logger

	syncMu sync.Mutex // held while flushing and fsyncing; taken before mu
	mu     struct {
		sync.Mutex
		f        *os.File
		first    uint64 // the index the segment f starts at
		w        *bufio.Writer
		end      int64   // offset after the last appended record
		zeroed   int64   // the segment holds zeros from end up to here
		appended uint64  // index of the last appended entry
		err      error   // sticky: after a failed write or sync nothing is durable
		hdr      [8]byte // the record header being written: one allocation less a record
		payload  []byte  // and its entry's encoding
	}
	// wait is where Syncs that find a sync running wait for it: on its
	// channel, all woken at once when it ends. Waiting on syncMu instead
	// woke them one at a time, each wakeup after the one before.
	wait struct {
		sync.Mutex
		synced  uint64        // index of the last durable entry
		running chan struct{} // closed when the running sync ends; nil when none runs
	}
	// spare is the next segment, made (zeroed and synced) in the
	// background after each Roll, so that a Roll, which the master does
	// under its lock, only renames it: making one there stalled every
	// client ~50 ms. Guarded by syncMu.
	spare *spareSegment
}

// spareSegment is a segment file being made ready under spareName.
type spareSegment struct {
	ready chan struct{} // closed when f or err is set
	f     *os.File
	err   error
}

// spareName is the spare segment's file: not "log-" and a number, so
// Replay never takes it for part of the log. A leftover one holds only
// zeros.
const spareName = "spare-segment"

// Open opens the log in dir, creating dir if needed. Call Replay before
// Append.
func Open(dir string, log *slog.Logger) (*Log, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open op log: %w", err)
	}
	return &Log{dir: dir, log: log}, nil
}

func segmentName(first uint64) string { return fmt.Sprintf("log-%020d", first) }

// segments lists the segment files by first index.
func (l *Log) segments() ([]uint64, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "log-"); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				out = append(out, n)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Replay calls fn for every logged entry with index > after, in order. A
// torn record at the end of the last segment (a crash mid-write) is cut
// off; a bad record anywhere else is ErrCorrupt. Replay then opens the last
// segment for appending.
func (l *Log) Replay(after uint64, fn func(*namespace.Entry) error) error {
	segs, err := l.segments()
	if err != nil {
		return fmt.Errorf("replay op log: %w", err)
	}
	last := after
	for i, first := range segs {
		isLast := i == len(segs)-1
		good, n, err := l.replaySegment(first, after, isLast, fn)
		if err != nil {
			return err
		}
		if n > last {
			last = n
		}
		if isLast {
			return l.openForAppend(first, good, last)
		}
	}
	// No segment yet: start one after the checkpoint.
	return l.openForAppend(after+1, 0, after)
}

// ReplayClosed calls fn for every logged entry with after < index <= upto,
// reading only the segments a Roll to upto+1 closed; it leaves the
// segment being appended to, and the log's state, alone. A background
// checkpoint rebuilds the tree from them while the log goes on.
func (l *Log) ReplayClosed(after, upto uint64, fn func(*namespace.Entry) error) error {
	segs, err := l.segments()
	if err != nil {
		return fmt.Errorf("replay op log: %w", err)
	}
	for i, first := range segs {
		if first > upto {
			break
		}
		if i+1 < len(segs) && segs[i+1] <= after+1 {
			continue // all at or below after
		}
		_, _, err := l.replaySegment(first, after, false, func(e *namespace.Entry) error {
			if e.Index > upto {
				return nil
			}
			return fn(e)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// replaySegment returns the offset after the last good record and the last
// index seen.
func (l *Log) replaySegment(first, after uint64, isLast bool, fn func(*namespace.Entry) error) (int64, uint64, error) {
	name := filepath.Join(l.dir, segmentName(first))
	f, err := os.Open(name)
	if err != nil {
		return 0, 0, fmt.Errorf("replay op log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	var lastIndex uint64
	for {
		payload, err := readRecord(r)
		if errors.Is(err, io.EOF) {
			return off, lastIndex, nil
		}
		if errors.Is(err, errZeroHeader) && zerosFrom(r) {
			return off, lastIndex, nil // the preallocated tail
		}
		if err != nil {
			// A crash mid-append leaves a torn record at the very end: cut
			// it off. A bad record with good ones after it is damage to
			// acknowledged history: refuse to start rather than lose it.
			if isLast && !validRecordAfter(name, off+1) {
				l.log.Warn("op log: cutting off torn record at end of log", "segment", name, "offset", off, "err", err)
				return off, lastIndex, nil
			}
			return 0, 0, fmt.Errorf("%w: %s: bad record at offset %d (%v) with more of the log after it; "+
				"refusing to start: restore the master directory from a copy, or truncate the segment at that offset to drop the entries from there on",
				ErrCorrupt, name, off, err)
		}
		var e namespace.Entry
		if err := decodeEntry(payload, &e); err != nil {
			return 0, 0, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, name, off, err)
		}
		off += int64(8 + len(payload))
		lastIndex = e.Index
		if e.Index <= after {
			continue
		}
		if err := fn(&e); err != nil {
			return 0, 0, fmt.Errorf("replay entry %d (%s): %w", e.Index, e.Type, err)
		}
	}
}

// errZeroHeader is a record header of all zeros: where the records end, if
// only zeros follow.
var errZeroHeader = errors.New("zero record header")

func readRecord(r *bufio.Reader) ([]byte, error) {
	var hdr [8]byte
	n, err := io.ReadFull(r, hdr[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("short record header: %w", err)
	}
	if hdr == [8]byte{} {
		return nil, errZeroHeader
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if size > maxRecord {
		return nil, fmt.Errorf("record of %d bytes", size)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("short record: %w", err)
	}
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
		return nil, errors.New("record checksum mismatch")
	}
	return payload, nil
}

// zerosFrom reports whether r holds nothing but zeros from here on.
func zerosFrom(r *bufio.Reader) bool {
	for {
		b, err := r.Peek(r.Buffered())
		if len(b) == 0 {
			if _, err = r.Peek(1); err != nil {
				return errors.Is(err, io.EOF)
			}
			continue
		}
		for _, c := range b {
			if c != 0 {
				return false
			}
		}
		r.Discard(len(b))
	}
}

func (l *Log) openForAppend(first uint64, size int64, last uint64) error {
	f, err := l.openSegment(filepath.Join(l.dir, segmentName(first)), os.O_RDWR|os.O_CREATE, size)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.setSegmentLocked(f, first, size)
	l.mu.appended = last
	l.mu.Unlock()
	l.wait.Lock()
	l.wait.synced = last
	l.wait.Unlock()
	l.syncMu.Lock()
	l.makeSpare()
	l.syncMu.Unlock()
	return nil
}

// openSegment opens the segment name, cuts it to size (dropping a torn
// record or an old zero tail), fills it with zeros ahead and makes that
// and its directory entry durable.
func (l *Log) openSegment(name string, flag int, size int64) (*os.File, error) {
	f, err := os.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open op log segment: %w", err)
	}
	err = f.Truncate(size)
	if err == nil {
		_, err = f.Seek(size, io.SeekStart)
	}
	if err == nil {
		err = writeZeros(f, size, preallocate)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open op log segment %s: %w", name, err)
	}
	return f, nil
}

// setSegmentLocked makes f, which starts at index first, whose records
// end at end and which is zeroed preallocate bytes past that, the segment
// appended to. l.mu must be held.
func (l *Log) setSegmentLocked(f *os.File, first uint64, end int64) {
	l.mu.f, l.mu.first = f, first
	l.mu.w = bufio.NewWriterSize(offsetWriter{f, &l.mu.end}, 256<<10)
	l.mu.end = end
	l.mu.zeroed = end + preallocate
}

// offsetWriter writes to a segment and counts where its records end.
type offsetWriter struct {
	f   *os.File
	end *int64
}

func (w offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	*w.end += int64(n)
	return n, err
}

var zeros [64 << 10]byte

// writeZeros writes n zero bytes to f at off, without moving f's offset.
func writeZeros(f *os.File, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// decodeEntry sets e from a record's payload: its binary form, or JSON,
// which logs written before the binary form hold.
func decodeEntry(payload []byte, e *namespace.Entry) error {
	if namespace.IsBinaryEntry(payload) {
		return e.UnmarshalBinary(payload)
	}
	return json.Unmarshal(payload, e)
}

// Append buffers e; it is durable only after Sync(e.Index) returns.
func (l *Log) Append(e *namespace.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.err != nil {
		return l.mu.err
	}
	payload, err := e.AppendBinary(l.mu.payload[:0])
	if err != nil {
		return fmt.Errorf("encode entry %d: %w", e.Index, err)
	}
	l.mu.payload = payload
	sum := crc32.Checksum(payload, castagnoli)
	binary.BigEndian.PutUint32(l.mu.hdr[:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(l.mu.hdr[4:], sum)
	if _, err := l.mu.w.Write(l.mu.hdr[:]); err != nil {
		l.mu.err = fmt.Errorf("append to op log: %w", err)
		return l.mu.err
	}
	if _, err := l.mu.w.Write(payload); err != nil {
		l.mu.err = fmt.Errorf("append to op log: %w", err)
		return l.mu.err
	}
	l.mu.appended = e.Index
	return nil
}

// Sync blocks until every entry up to index is durable. One caller at a
// time syncs, everything appended so far; the others wait for it and, if
// it did not cover them, one of them syncs next (group commit). Entries
// are appended before their Sync, so a caller that syncs covers its own.
func (l *Log) Sync(index uint64) error {
	for {
		l.wait.Lock()
		if l.wait.synced >= index {
			l.wait.Unlock()
			return nil
		}
		if running := l.wait.running; running != nil {
			l.wait.Unlock()
			<-running
			continue
		}
		done := make(chan struct{})
		l.wait.running = done
		l.wait.Unlock()
		// Let the goroutines already runnable here (RPCs about to
		// append) go first, so that this sync covers them too: no timer,
		// which an idling process would wake a millisecond late.
		runtime.Gosched()
		upto, err := l.syncAppended()
		l.wait.Lock()
		if err == nil {
			l.wait.synced = max(l.wait.synced, upto)
		}
		l.wait.running = nil
		close(done)
		l.wait.Unlock()
		// It synced all that was appended before it started, this
		// caller's entries too.
		return err
	}
}

// syncAppended flushes and fdatasyncs every entry appended so far and
// returns the index of the last.
func (l *Log) syncAppended() (uint64, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	if l.mu.err != nil {
		err := l.mu.err
		l.mu.Unlock()
		return 0, err
	}
	err := l.mu.w.Flush()
	upto, f := l.mu.appended, l.mu.f
	left := false // f was left for the spare segment
	if err == nil && l.mu.zeroed-l.mu.end < switchAt {
		if left = l.goOnInSpareLocked(); !left {
			// No spare ready: zero the next stretch now, under mu so
			// that no flush of records races it; its one sync pays for
			// the growth.
			from := max(l.mu.end, l.mu.zeroed)
			err = writeZeros(l.mu.f, from, l.mu.end+preallocate-from)
			l.mu.zeroed = l.mu.end + preallocate
		}
	}
	if err != nil {
		l.mu.err = fmt.Errorf("flush op log: %w", err)
		err = l.mu.err
		l.mu.Unlock()
		return 0, err
	}
	l.mu.Unlock()
	err = datasync.File(f) // over a preallocated segment: see preallocate
	if left {
		f.Close()
		if err == nil {
			err = syncDir(l.dir) // the spare's new name
		}
		l.makeSpare()
	}
	if err != nil {
		l.mu.Lock()
		l.mu.err = fmt.Errorf("sync op log: %w", err)
		l.mu.Unlock()
		return 0, err
	}
	return upto, nil
}

// goOnInSpareLocked makes the spare segment, if it is ready, the one
// appended to, from the next index on, and reports whether it did: the
// caller syncs and closes the one left. Growing a segment instead made
// the sync after it commit the file system's journal, 2-30 ms here with
// other writes about (a checkpoint's), while every op waited. syncMu and
// mu must be held, the records flushed.
func (l *Log) goOnInSpareLocked() bool {
	sp := l.spare
	if sp == nil {
		return false
	}
	select {
	case <-sp.ready:
	default:
		return false
	}
	next := l.mu.appended + 1
	if sp.err != nil || os.Rename(filepath.Join(l.dir, spareName), filepath.Join(l.dir, segmentName(next))) != nil {
		return false // Roll reports a spare that failed
	}
	l.spare = nil
	l.setSegmentLocked(sp.f, next, 0)
	return true
}

// Roll syncs the current segment and starts a new one whose first entry
// will be next. Called after a checkpoint so older segments can go.
func (l *Log) Roll(next uint64) error {
	if err := l.Sync(next - 1); err != nil {
		return err
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	started := l.mu.first == next // by a Sync that went on in the spare
	l.mu.Unlock()
	if started {
		return nil
	}
	f, err := l.takeSpare(segmentName(next))
	if err != nil {
		return fmt.Errorf("roll op log: %w", err)
	}
	l.mu.Lock()
	old := l.mu.f
	l.setSegmentLocked(f, next, 0)
	l.mu.Unlock()
	l.makeSpare()
	return old.Close()
}

// makeSpare starts making the next segment. syncMu must be held.
func (l *Log) makeSpare() {
	sp := &spareSegment{ready: make(chan struct{})}
	l.spare = sp
	go func() {
		defer close(sp.ready)
		sp.f, sp.err = l.openSegment(filepath.Join(l.dir, spareName), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0)
	}()
}

// takeSpare renames the spare segment (made now if none is being made)
// to name and returns it open. syncMu must be held.
func (l *Log) takeSpare(name string) (*os.File, error) {
	if l.spare == nil {
		l.makeSpare()
	}
	sp := l.spare
	l.spare = nil
	<-sp.ready
	if sp.err != nil {
		return nil, sp.err
	}
	if err := os.Rename(filepath.Join(l.dir, spareName), filepath.Join(l.dir, name)); err != nil {
		sp.f.Close()
		return nil, err
	}
	if err := syncDir(l.dir); err != nil {
		sp.f.Close()
		return nil, err
	}
	return sp.f, nil
}

// Compact removes the segments whose entries are all at or below index
// (covered by a checkpoint).
func (l *Log) Compact(index uint64) error {
	segs, err := l.segments()
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(segs); i++ {
		if segs[i+1] <= index+1 {
			if err := os.Remove(filepath.Join(l.dir, segmentName(segs[i]))); err != nil {
				return fmt.Errorf("compact op log: %w", err)
			}
		}
	}
	return nil
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	appended := l.mu.appended
	l.mu.Unlock()
	err := l.Sync(appended)
	l.syncMu.Lock()
	if sp := l.spare; sp != nil {
		l.spare = nil
		<-sp.ready
		if sp.f != nil {
			sp.f.Close()
		}
	}
	l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f != nil {
		if cerr := l.mu.f.Close(); err == nil {
			err = cerr
		}
		l.mu.f = nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// validRecordAfter reports whether a well-formed record (length in bounds,
// CRC matching) starts anywhere in the segment at or after off.
func validRecordAfter(name string, off int64) bool {
	b, err := os.ReadFile(name)
	if err != nil || off >= int64(len(b)) {
		return false
	}
	for i := int(off); i+8 <= len(b); i++ {
		size := int(binary.BigEndian.Uint32(b[i:]))
		if size == 0 || size > maxRecord || i+8+size > len(b) {
			continue
		}
		if crc32.Checksum(b[i+8:i+8+size], castagnoli) == binary.BigEndian.Uint32(b[i+4:]) {
			return true
		}
	}
	return false
}

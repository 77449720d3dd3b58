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
// Segments a checkpoint covers are kept as free files and reused as new
// segments (see Compact), so that a master that has run for a while
// writes no zeros: a reused segment holds its old records after the new
// ones. Entry indices tell them apart: a segment's records are the
// entries from its first index on, one after another, and every old
// record has an index below that.
package oplog

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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

// switchAt is how few written bytes (zeros, or a reused segment's older
// records) past the last record make a sync go on in the spare segment: a
// new segment takes preallocate-switchAt bytes of records, and each new
// spare made (4 MiB written and synced while the master serves) held up
// the op log's syncs by 2-3 ms, so the fewer the better. What is appended
// between two syncs seldom comes near it; if it passes them, that sync
// records the file's new size, slower but as safe.
const switchAt = 512 << 10

// ErrCorrupt marks a log or checkpoint that cannot be read back.
var ErrCorrupt = errors.New("op log corrupt")

// ErrNoSpace is Ready's answer while the log's disk is too full for it to
// take more entries. It is not the log's failure: nothing appended is lost,
// and the log takes entries again once space is freed.
var ErrNoSpace = errors.New("master's op log is out of disk space")

// minRoom is how much room for records (in blocks written ahead) the
// segment must have left for Ready to let a change in while the disk is
// full: more than the entries of any one change, or of the changes
// between two syncs, take.
const minRoom = 256 << 10

// spareRetry is how long after a spare failed to be made (a full disk)
// the next one is tried.
const spareRetry = time.Second

// Log is the op log in one directory. Append and Roll must be called by one
// goroutine at a time (the master holds its lock); Sync may be called
// concurrently.
type Log struct {
	dir string
	log *slog.Logger

	syncMu sync.Mutex // held while flushing and fsyncing; taken before mu
	mu     struct {
		sync.Mutex
		first    uint64      // the index the segment appended to starts at
		w        *pageWriter // writes to that segment, w.f
		written  int64       // the segment's blocks are written (zeros or old records) up to here
		appended uint64      // index of the last appended entry
		err      error       // sticky: after a failed write or sync nothing is durable
		full     error       // not sticky: the last try to zero more blocks found the disk full
		hdr      [8]byte     // the record header being written: one allocation less a record
		payload  []byte      // and its entry's encoding
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
	// free are the files of segments a checkpoint covered, to be reused
	// as spares, at most maxFree of them (keepFree; tests set fewer).
	// Guarded by syncMu.
	free    []string
	maxFree int
}

// spareSegment is a segment file being made ready under spareName: a
// free one, or a new one.
type spareSegment struct {
	ready  chan struct{} // closed when f, size or err is set
	path   string
	f      *os.File
	size   int64 // its blocks are written up to here
	err    error
	failed time.Time // when err was set
}

// spareName is the spare segment's file and freePrefix starts a free
// one's: not "log-" and a number, so Replay never takes them for part of
// the log. A leftover spare may hold entries appended to it that were
// never acknowledged (it is named a segment only after the one before it
// is synced): it is made again from scratch, never reused as it is.
const (
	spareName  = "spare-segment"
	freePrefix = "free-"
)

// keepFree is how many free segments are kept for reuse (about 4 MiB
// each): more than the op log of a checkpoint interval (1 million
// entries, ~100 MB) fills, so a master serving steadily makes no new
// ones. Freed segments beyond it are removed.
const keepFree = 64

// Open opens the log in dir, creating dir if needed. Call Replay before
// Append.
func Open(dir string, log *slog.Logger) (*Log, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open op log: %w", err)
	}
	return &Log{dir: dir, log: log, maxFree: keepFree}, nil
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
// off; a bad record anywhere else, or a gap in the indices, is
// ErrCorrupt. Replay then opens the last segment for appending.
func (l *Log) Replay(after uint64, fn func(*namespace.Entry) error) error {
	segs, err := l.segments()
	if err != nil {
		return fmt.Errorf("replay op log: %w", err)
	}
	if len(segs) > 0 && segs[0] > after+1 {
		return fmt.Errorf("%w: the log starts at entry %d, after the checkpoint's %d: entries %d-%d are missing",
			ErrCorrupt, segs[0], after, after+1, segs[0]-1)
	}
	for i, first := range segs {
		var until uint64 // the last index the segment must hold; 0 for the last segment
		if i+1 < len(segs) {
			until = segs[i+1] - 1
		}
		good, last, err := l.replaySegment(first, after, until, fn)
		if err != nil {
			return err
		}
		if until == 0 {
			return l.openForAppend(first, good, max(last, after))
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
	for i := 0; i+1 < len(segs) && segs[i] <= upto; i++ {
		if segs[i+1] <= after+1 {
			continue // all at or below after
		}
		_, _, err := l.replaySegment(segs[i], after, segs[i+1]-1, func(e *namespace.Entry) error {
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

// replaySegment reads the segment whose first entry is first and returns
// the offset after its last record and that record's index (first-1 if
// it has none). The records end at the end of the file, at zeros (a new
// segment's preallocated tail) or at a record that is not the next
// entry: a reused segment's old records follow. A segment with one after
// it must end at entry until; the last one (until 0) may end anywhere,
// but only where none of its own entries follow, else it is damaged.
func (l *Log) replaySegment(first, after, until uint64, fn func(*namespace.Entry) error) (int64, uint64, error) {
	name := filepath.Join(l.dir, segmentName(first))
	f, err := os.Open(name)
	if err != nil {
		return 0, 0, fmt.Errorf("replay op log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	last := first - 1
	for until == 0 || last < until {
		payload, err := readRecord(r)
		if errors.Is(err, io.EOF) || errors.Is(err, errZeroHeader) && zerosFrom(r) {
			break
		}
		var e namespace.Entry
		if err == nil {
			err = decodeEntry(payload, &e)
		}
		if err == nil && e.Index >= first && e.Index != last+1 {
			return 0, 0, fmt.Errorf("%w: %s at offset %d: entry %d where %d was due", ErrCorrupt, name, off, e.Index, last+1)
		}
		if err == nil && e.Index < first {
			err = errOldRecord
		}
		if err != nil {
			// A crash mid-append leaves a torn record at the very end, and
			// a reused segment has old records after its own: either way,
			// none of this segment's entries come after. One that does
			// is damage to acknowledged history: refuse to start rather
			// than lose it.
			// A segment before the last ends only at old records (whether
			// all of its own came first is checked below).
			old := errors.Is(err, errOldRecord)
			if until != 0 && !old || until == 0 && recordAfter(name, off+1, first) {
				return 0, 0, fmt.Errorf("%w: %s: bad record at offset %d (%v) with more of the log after it; "+
					"refusing to start: restore the master directory from a copy, or truncate the segment at that offset to drop the entries from there on",
					ErrCorrupt, name, off, err)
			}
			if !old {
				l.log.Info("op log: cutting the last segment where its records end (a torn record, or a reused segment's old ones)",
					"segment", name, "offset", off, "err", err)
			}
			break
		}
		off += int64(8 + len(payload))
		last = e.Index
		if e.Index <= after {
			continue
		}
		if err := fn(&e); err != nil {
			return 0, 0, fmt.Errorf("replay entry %d (%s): %w", e.Index, e.Type, err)
		}
	}
	if until != 0 && last != until {
		return 0, 0, fmt.Errorf("%w: %s ends at entry %d (offset %d), the next segment starts at %d: "+
			"refusing to start: restore the master directory from a copy", ErrCorrupt, name, last, off, until+1)
	}
	return off, last, nil
}

// errZeroHeader is a record header of all zeros: where the records end, if
// only zeros follow. errOldRecord is a record from before a segment was
// reused: where its records end.
var (
	errZeroHeader = errors.New("zero record header")
	errOldRecord  = errors.New("record from before the segment was reused")
)

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
	f, written, full := l.openSegment(filepath.Join(l.dir, segmentName(first)), os.O_RDWR|os.O_CREATE, size)
	if errors.Is(full, ErrNoSpace) {
		// Started on a full disk: it serves, and takes changes while the
		// room its segment had lasts (see Ready).
		l.log.Error("op log: disk full at start", "room", written-size, "err", full)
	} else if full != nil {
		return full
	}
	w, err := newPageWriter(f, size)
	if err != nil {
		f.Close()
		return fmt.Errorf("open op log: %w", err)
	}
	free, err := filepath.Glob(filepath.Join(l.dir, freePrefix+"*"))
	if err != nil {
		f.Close()
		return fmt.Errorf("open op log: %w", err)
	}
	l.mu.Lock()
	l.setSegmentLocked(w, first, written)
	l.mu.appended = last
	l.mu.full = full
	l.mu.Unlock()
	l.wait.Lock()
	l.wait.synced = last
	l.wait.Unlock()
	l.syncMu.Lock()
	l.free = free
	l.makeSpare()
	l.syncMu.Unlock()
	return nil
}

// openSegment opens the segment name and fills it with zeros from size on
// (over a torn record, or a reused segment's older records, in the blocks
// it has, then past its end) up to size+preallocate, and makes that and
// its directory entry durable. It returns how far the file's blocks are
// written; on a full disk that is short of size+preallocate, and the file
// is returned open, with the error.
func (l *Log) openSegment(name string, flag int, size int64) (*os.File, int64, error) {
	f, err := os.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("open op log segment: %w", err)
	}
	var n int64
	fi, err := f.Stat()
	if err == nil {
		n, err = datasync.WriteZeros(f, size, preallocate)
	}
	full := noSpace(l.dir, err) // what it has will do for now
	if full != nil {
		err = nil
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open op log segment %s: %w", name, err)
	}
	return f, max(fi.Size(), size+n), full
}

// OutOfSpace says whether err is a full disk's or a used-up quota's.
func OutOfSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// noSpace returns ErrNoSpace, with the cause, if err says the disk of the
// log in dir is full; else nil.
func noSpace(dir string, err error) error {
	if !OutOfSpace(err) {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) { // its name may be the spare's it had
		err = pe.Err
	}
	return fmt.Errorf("%w (%s): %v", ErrNoSpace, dir, err)
}

// setSegmentLocked makes w's file, which starts at index first and whose
// blocks are written up to written, the segment appended to. l.mu must be
// held.
func (l *Log) setSegmentLocked(w *pageWriter, first uint64, written int64) {
	l.mu.first, l.mu.w = first, w
	l.mu.written = written
}

// newSegmentLocked makes the empty segment f, which starts at index first
// and whose blocks are written up to written, the segment appended to.
// l.mu must be held.
func (l *Log) newSegmentLocked(f *os.File, first uint64, written int64) {
	w, _ := newPageWriter(f, 0) // nothing to read back
	l.setSegmentLocked(w, first, written)
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
	if err := l.mu.w.add(l.mu.written, l.mu.hdr[:], payload); err != nil {
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
	err := l.mu.w.flush(l.mu.written)
	upto, f := l.mu.appended, l.mu.w.f
	var next *spareSegment // the segment f was left for
	if err == nil && l.mu.written-l.mu.w.end() < switchAt {
		if next = l.readySpare(); next != nil {
			l.newSegmentLocked(next.f, upto+1, next.size)
		} else {
			err = l.growLocked()
		}
	}
	if err != nil {
		l.mu.err = fmt.Errorf("flush op log: %w", err)
		err = l.mu.err
		l.mu.Unlock()
		return 0, err
	}
	l.mu.Unlock()
	err = datasync.File(f) // over written blocks: see preallocate
	if next != nil {
		// The spare is named a segment only now that f is durable: a
		// crash before leaves f the log's last segment, whole, and
		// what was appended to the spare (none of it acknowledged) out
		// of the log.
		if err == nil {
			err = l.nameSegment(next, upto+1)
		}
		f.Close()
		if err == nil { // else the spare's file is the one appended to
			l.makeSpare()
		}
	}
	if err != nil {
		l.mu.Lock()
		l.mu.err = fmt.Errorf("sync op log: %w", err)
		l.mu.Unlock()
		return 0, err
	}
	return upto, nil
}

// growLocked zeroes the segment's next stretch when no spare is ready,
// under mu so that no flush of records races it; the sync after it pays
// for the growth. A full disk is not the log's failure: the records so
// far lie in blocks written before, and Ready refuses changes before the
// rest of those run out, so growLocked records it in full and the next
// sync, or Ready, tries again. l.mu must be held.
func (l *Log) growLocked() error {
	from := max(l.mu.w.end(), l.mu.written)
	n, err := datasync.WriteZeros(l.mu.w.f, from, l.mu.w.end()+preallocate-from)
	l.mu.written = max(l.mu.written, from+n)
	full := noSpace(l.dir, err)
	if full == nil {
		l.mu.full = nil
		return err
	}
	if l.mu.full == nil {
		l.log.Error("op log: disk full; changes are refused when the room left runs out",
			"room", l.roomLocked(), "err", err)
	}
	l.mu.full = full
	return nil
}

// Ready returns nil if the log can take a change now, ErrNoSpace while
// its disk is full and the room left in the segment is under minRoom
// (nothing is appended meanwhile, so no sync would try again: Ready does),
// or the error that stopped it.
func (l *Log) Ready() error {
	l.mu.Lock()
	err, full, room := l.mu.err, l.mu.full, l.roomLocked()
	l.mu.Unlock()
	if err != nil || full == nil || room >= minRoom {
		return err
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.growLocked(); err != nil {
		l.mu.err = fmt.Errorf("grow op log: %w", err)
		return l.mu.err
	}
	if l.roomLocked() >= minRoom {
		return nil
	}
	return l.mu.full
}

// roomLocked is how many more bytes of records fit in the blocks written
// ahead, counting those still buffered. l.mu must be held.
func (l *Log) roomLocked() int64 {
	return l.mu.written - l.mu.w.end() - int64(l.mu.w.Buffered())
}

// readySpare returns the spare segment if it is ready, taking it, and nil
// if it is not: the caller then grows the segment instead. Growing made
// the sync after it commit the file system's journal, 2-30 ms here with
// other writes about (a checkpoint's), while every op waited. A spare
// that could not be made (a full disk) is made again spareRetry later.
// syncMu must be held.
func (l *Log) readySpare() *spareSegment {
	sp := l.spare
	if sp == nil {
		return nil
	}
	select {
	case <-sp.ready:
	default:
		return nil
	}
	if sp.err != nil {
		if time.Since(sp.failed) >= spareRetry {
			l.makeSpare()
		}
		return nil
	}
	l.spare = nil
	return sp
}

// nameSegment renames the spare sp to the segment starting at first and
// makes the name durable.
func (l *Log) nameSegment(sp *spareSegment, first uint64) error {
	if err := os.Rename(sp.path, filepath.Join(l.dir, segmentName(first))); err != nil {
		return err
	}
	return syncDir(l.dir)
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
	if l.spare == nil {
		l.makeSpare()
	}
	sp := l.spare
	l.spare = nil
	<-sp.ready
	err := sp.err
	if err == nil {
		if err = l.nameSegment(sp, next); err != nil {
			sp.f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("roll op log: %w", err)
	}
	l.mu.Lock()
	old := l.mu.w.f
	l.newSegmentLocked(sp.f, next, sp.size)
	l.mu.Unlock()
	l.makeSpare()
	return old.Close()
}

// makeSpare starts making the next segment ready under spareName: a free
// one if there is one, which needs no writes, else a new one zeroed
// ahead. syncMu must be held.
func (l *Log) makeSpare() {
	sp := &spareSegment{ready: make(chan struct{}), path: filepath.Join(l.dir, spareName)}
	l.spare = sp
	var free string
	if n := len(l.free); n > 0 {
		free, l.free = l.free[n-1], l.free[:n-1]
	}
	go func() {
		defer close(sp.ready)
		if free != "" {
			if sp.f, sp.size = l.reuseSegment(free, sp.path); sp.f != nil {
				return
			}
		}
		sp.f, sp.size, sp.err = l.openSegment(sp.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0)
		if sp.err != nil {
			if sp.f != nil {
				sp.f.Close()
				sp.f = nil
			}
			// Its blocks are the disk's again (it was full, most likely).
			os.Remove(sp.path)
			sp.failed = time.Now()
			l.log.Error("op log: make spare segment", "err", sp.err)
		}
	}()
}

// reuseSegment renames the free segment free to spare and opens it, with
// its size; nil (and free removed) if it is too small to be worth it or
// will not open. Only the spare is ever appended to before it is named a
// segment, so the new name must be durable before that: else a crash
// could leave unacknowledged records with high indices in a free file,
// to be taken later for damage where it is reused.
func (l *Log) reuseSegment(free, spare string) (*os.File, int64) {
	f, err := os.OpenFile(free, os.O_RDWR, 0)
	if err != nil {
		return nil, 0
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < preallocate {
		err = errors.New("too small")
	}
	if err == nil {
		err = os.Rename(free, spare)
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(free)
		return nil, 0
	}
	return f, fi.Size()
}

// Compact frees the segments whose entries are all at or below index
// (covered by a checkpoint): up to keepFree of them are kept, renamed, to
// be reused, the rest removed.
func (l *Log) Compact(index uint64) error {
	segs, err := l.segments()
	if err != nil {
		return err
	}
	l.syncMu.Lock()
	room := l.maxFree - len(l.free)
	l.syncMu.Unlock()
	var freed []string
	for i := 0; i+1 < len(segs) && segs[i+1] <= index+1; i++ {
		name := filepath.Join(l.dir, segmentName(segs[i]))
		if len(freed) < room {
			free := filepath.Join(l.dir, fmt.Sprintf("%s%020d", freePrefix, segs[i]))
			if err = os.Rename(name, free); err == nil {
				freed = append(freed, free)
			}
		} else {
			err = os.Remove(name)
		}
		if err != nil {
			break
		}
	}
	// Renamed outside syncMu, which every sync takes: a rename can take
	// a journal commit's time.
	l.syncMu.Lock()
	l.free = append(l.free, freed...)
	l.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("compact op log: %w", err)
	}
	return nil
}

// DropFree removes the free segments kept for reuse, giving their disk
// space back (a checkpoint that found the disk full needs it more), and
// returns how many bytes that freed.
func (l *Log) DropFree() int64 {
	l.syncMu.Lock()
	free := l.free
	l.free = nil
	l.syncMu.Unlock()
	var n int64
	for _, name := range free {
		if fi, err := os.Stat(name); err == nil && os.Remove(name) == nil {
			n += fi.Size()
		}
	}
	return n
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
	if w := l.mu.w; w != nil && w.f != nil {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
		w.f = nil
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

// recordAfter reports whether a well-formed record (length in bounds,
// CRC matching) of an entry at or after index first starts anywhere in
// the segment at or after off: one of the segment's own, not one from
// before it was reused.
func recordAfter(name string, off int64, first uint64) bool {
	b, err := os.ReadFile(name)
	if err != nil || off >= int64(len(b)) {
		return false
	}
	for i := int(off); i+8 <= len(b); i++ {
		size := int(binary.BigEndian.Uint32(b[i:]))
		if size == 0 || size > maxRecord || i+8+size > len(b) {
			continue
		}
		payload := b[i+8 : i+8+size]
		// Most offsets are inside older records: what they would hold
		// tells them apart before a CRC over up to the whole file does
		// (that made the scan of one 3.5 MiB segment take 4.5 s).
		if idx, ok := namespace.BinaryEntryIndex(payload); ok && idx < first || !ok && payload[0] != '{' {
			continue
		}
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[i+4:]) {
			continue
		}
		var e namespace.Entry
		if decodeEntry(payload, &e) != nil || e.Index >= first {
			return true // undecodable but well-formed: not an old entry either
		}
	}
	return false
}

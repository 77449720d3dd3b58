package datanode

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godfs/godfs/internal/datasync"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// Replicas of at most packMax bytes are records in pack files,
// <volume>/current/packs/<seq>.pack, not files of their own. A file per
// small replica costs a create, an fsync, a rename and a directory fsync,
// each writing inode, bitmap and directory blocks; a record costs one
// write into a file whose blocks were zeroed and synced beforehand, and
// a share of one fdatasync with the records that finish at the same time.
// (Here a 4 KiB file created, written, fsynced and its directory fsynced
// took ~0.53 ms; 4 KiB written into a zeroed file and fdatasynced, ~0.19.)
//
// A record, big-endian:
//
//	 0  magic "GDPR"
//	 4  state: 1 live, 0 deleted (rewritten in place on delete)
//	 5  checksum type
//	 6  zero (2 bytes)
//	 8  block id
//	16  generation stamp
//	24  length (bytes of data)
//	28  CRC32C of bytes 0-27, the state byte taken as 1
//	32  the chunks' checksums, then the data
//
// Records are appended in order, each acknowledged only after an
// fdatasync of its pack that started after it was written. A pack is
// synced whole before the next one takes a record, so after a crash only
// the newest pack holding records may end in a torn record: its records'
// data are checked against their checksums when the datanode starts, and
// the first that fails ends it. A deleted record is marked dead and the
// whole file system blocks inside it given back (a hole punched); a pack
// no new record goes to is removed once all its records are deleted, and
// compacted (see compact) once most are. Deletions are not synced: one a
// crash undoes comes back as a replica the master no longer knows, which
// it has deleted again. A replica being written is held in memory until
// it finishes or outgrows packMax (see replicaWriter).
const (
	packMax          = 64 << 10
	packSize         = 16 << 20
	recordHeaderSize = 32
	recordMagic      = 0x47445052
)

// syncGathering is how long an fdatasync of a pack waits, when other
// replicas are being received, for their records to share it: with 16
// clients writing 4 KiB files (BenchmarkSmallWrite), 5.6 records an
// fdatasync instead of 1.7, and a third more files a second (fewer
// fdatasyncs leave the disk and the CPU to the rest). A lone writer
// does not wait.
const syncGathering = time.Millisecond

func recordSize(length int64) int64 {
	return recordHeaderSize + xfer.NumChunks(length)*protocol.ChecksumSize + length
}

func packName(seq uint64) string { return fmt.Sprintf("%08d.pack", seq) }

// recordHeader encodes the header of a record.
func recordHeader(hdr []byte, id, gs uint64, length int64, cs pb.ChecksumTypeProto) {
	binary.BigEndian.PutUint32(hdr[0:], recordMagic)
	hdr[4] = 1
	hdr[5] = byte(cs)
	hdr[6], hdr[7] = 0, 0
	binary.BigEndian.PutUint64(hdr[8:], id)
	binary.BigEndian.PutUint64(hdr[16:], gs)
	binary.BigEndian.PutUint32(hdr[24:], uint32(length))
	binary.BigEndian.PutUint32(hdr[28:], headerCRC(hdr))
}

func headerCRC(hdr []byte) uint32 {
	var b [28]byte
	copy(b[:], hdr[:28])
	b[4] = 1
	return crc32.Checksum(b[:], xfer.CRC32C)
}

// parsedHeader is a record's header; ok is false for bytes that are no
// header (zeros past the last record, or a torn one).
type parsedHeader struct {
	live   bool
	cs     pb.ChecksumTypeProto
	id, gs uint64
	length int64
}

func parseRecordHeader(hdr []byte) (h parsedHeader, ok bool) {
	if binary.BigEndian.Uint32(hdr[0:]) != recordMagic || binary.BigEndian.Uint32(hdr[28:]) != headerCRC(hdr) {
		return h, false
	}
	h = parsedHeader{live: hdr[4] == 1, cs: pb.ChecksumTypeProto(hdr[5]),
		id: binary.BigEndian.Uint64(hdr[8:]), gs: binary.BigEndian.Uint64(hdr[16:]),
		length: int64(binary.BigEndian.Uint32(hdr[24:]))}
	return h, h.length <= packMax
}

// pack is one pack file.
type pack struct {
	seq  uint64
	path string
	// mu is held shared while a record is read and exclusively while one
	// is deleted or the file closed, so that no reader sees a record's
	// bytes punched out under it.
	mu sync.RWMutex
	f  *os.File // nil once the pack is closed
	// Under the store's mu:
	live       int   // records indexed or being appended
	liveBytes  int64 // their size
	sealed     bool  // no record will be appended any more
	compacting bool

	// Group commit: every appender needs an fdatasync that started after
	// its write; whoever finds none running starts one for all waiting.
	syncMu        sync.Mutex
	synced        sync.Cond
	started, done uint64
	syncing       bool
	syncErr       error // sticky: after a failed fdatasync nothing since is known to be on disk
}

func newPack(dir string, seq uint64, f *os.File) *pack {
	p := &pack{seq: seq, path: filepath.Join(dir, packName(seq)), f: f}
	p.synced.L = &p.syncMu
	return p
}

// sync returns once an fdatasync of the pack that started after the call
// has finished. If gather, one it starts waits syncGathering first, for
// the records of replicas finishing meanwhile to share it.
func (p *pack) sync(gather bool) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	want := p.started + 1
	for p.done < want {
		if p.syncing {
			p.synced.Wait()
			continue
		}
		p.syncing = true
		if gather {
			p.syncMu.Unlock()
			time.Sleep(syncGathering)
			p.syncMu.Lock()
		}
		p.started++
		n := p.started
		p.syncMu.Unlock()
		err := datasync.File(p.f)
		p.syncMu.Lock()
		p.syncing, p.done = false, n
		if err != nil && p.syncErr == nil {
			p.syncErr = fmt.Errorf("sync %s: %w", p.path, err)
		}
		p.synced.Broadcast()
	}
	return p.syncErr
}

// read reads the record at off, which the index says is block id's with
// generation stamp gs and length bytes, and returns its checksums and data,
// in buf if it has room.
func (p *pack) read(buf []byte, off int64, id, gs uint64, length int64) (sums, data []byte, cs pb.ChecksumTypeProto, err error) {
	rec := buf[:0]
	if n := recordSize(length); int64(cap(rec)) >= n {
		rec = rec[:n]
	} else {
		rec = make([]byte, n)
	}
	p.mu.RLock()
	if p.f == nil {
		p.mu.RUnlock()
		return nil, nil, 0, fmt.Errorf("open block %d: %w", id, fs.ErrNotExist)
	}
	_, err = p.f.ReadAt(rec, off)
	p.mu.RUnlock()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read block %d from %s: %w", id, p.path, err)
	}
	h, ok := parseRecordHeader(rec)
	if ok && !h.live && h.id == id && h.gs == gs {
		// Deleted since the index was read (or reopened for recovery).
		return nil, nil, 0, fmt.Errorf("open block %d: %w", id, fs.ErrNotExist)
	}
	if !ok || h.id != id || h.gs != gs || h.length != length {
		return nil, nil, 0, fmt.Errorf("block %d: record at %d of %s is not its replica: %w", id, off, p.path, protocol.ErrCorruption)
	}
	nsums := xfer.NumChunks(length) * protocol.ChecksumSize
	return rec[recordHeaderSize : recordHeaderSize+nsums : recordHeaderSize+nsums], rec[recordHeaderSize+nsums:], h.cs, nil
}

// kill marks the record of size bytes at off deleted and gives its space
// back.
func (p *pack) kill(off, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return nil
	}
	if _, err := p.f.WriteAt([]byte{0}, off+4); err != nil {
		return fmt.Errorf("delete record at %d of %s: %w", off, p.path, err)
	}
	// Whole file system blocks only: the header stays, so that a scan
	// can step over the record.
	const blk = 4096
	from := (off + recordHeaderSize + blk - 1) / blk * blk
	to := (off + size) / blk * blk
	if to > from {
		punchHole(p.f, from, to-from) // space given back, or kept where holes are not supported
	}
	return nil
}

// close closes the pack's file and, if remove, deletes it.
func (p *pack) close(remove bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	if remove {
		err = errors.Join(err, os.Remove(p.path))
	}
	return err
}

// packLog appends records to a volume's packs.
type packLog struct {
	s   *store
	dir string
	// mu is held while a record is placed and written, so that records
	// land one after another with no gap a crash could leave.
	mu      sync.Mutex
	cur     *pack // nil until the first record
	end     int64 // where the next record goes in cur
	nextSeq uint64
	spare   chan spareResult // the next pack, being zeroed; nil when none is
	all     map[uint64]*pack // every open pack, for close
	closed  bool

	// compactDelay is how long a sparse pack waits before it is compacted:
	// a big deletion reaches a datanode over many heartbeats, and the
	// records it will delete need no copy. closing ends the waits.
	compactDelay time.Duration
	closing      chan struct{}
}

var errPacksClosed = errors.New("packs closed")

type spareResult struct {
	p   *pack
	err error
}

// append writes rec, a record of a replica of length bytes, and returns
// where it went once it is on disk. The pack's live count includes it.
// A record (of at most packMax bytes of data) always fits in a pack.
func (l *packLog) append(rec []byte) (*pack, int64, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, 0, errPacksClosed
	}
	if l.cur == nil || l.end+int64(len(rec)) > packSize {
		if err := l.next(); err != nil {
			l.mu.Unlock()
			return nil, 0, err
		}
	}
	p, off, size := l.cur, l.end, int64(len(rec))
	l.s.mu.Lock()
	p.live++ // before anyone can seal it: it is not removed under the record
	p.liveBytes += size
	l.s.mu.Unlock()
	if _, err := p.f.WriteAt(padToPage(rec, off), off); err != nil {
		l.mu.Unlock()
		l.release(p, size)
		return nil, 0, fmt.Errorf("write %s: %w", p.path, err)
	}
	l.end += int64(len(rec))
	l.mu.Unlock()
	l.s.mu.Lock()
	gather := len(l.s.mu.writing) > 1 // this replica's and others being received
	l.s.mu.Unlock()
	if err := p.sync(gather); err != nil {
		// What the pack holds since its last good sync may be lost: the
		// records that follow go to a new pack, so that a restart, which
		// stops at the first bad record, does not lose them too.
		l.mu.Lock()
		if l.cur == p {
			l.end = packSize
		}
		l.mu.Unlock()
		p.kill(off, size)
		l.release(p, size)
		return nil, 0, err
	}
	return p, off, nil
}

// padToPage returns rec, to be written at off, with the zeros after it to
// the end of its last page, as far as its capacity (whose bytes past rec
// are zeros) and the pack go. A write to part of a page that is not in
// the page cache makes the kernel read it from the disk first, inside the
// write; the pack's zeros past its records were written when it was
// made, and this VM's page cache gives cold pages back to the host.
func padToPage(rec []byte, off int64) []byte {
	end := off + int64(len(rec))
	pad := min((datasync.PageSize-end%datasync.PageSize)%datasync.PageSize, packSize-end, int64(cap(rec)-len(rec)))
	return rec[:len(rec)+int(max(pad, 0))]
}

// release drops a record of size bytes from p's count, removing a sealed
// pack that holds no more (and reporting that it did) or compacting one
// that holds little.
func (l *packLog) release(p *pack, size int64) (removed bool) {
	s := l.s
	s.mu.Lock()
	p.live--
	p.liveBytes -= size
	gone := p.live == 0 && p.sealed
	compact := !gone && l.shouldCompactLocked(p)
	s.mu.Unlock()
	if gone {
		l.forget(p)
	}
	if compact {
		l.startCompaction(p)
	}
	return gone
}

// drop deletes the record of replica r, which is out of the index.
func (l *packLog) drop(r *replica) error {
	size := recordSize(r.length)
	if l.release(r.pack, size) {
		return nil
	}
	return r.pack.kill(r.off, size)
}

// compactBelow is the share of a sealed pack's size below which its live
// records are copied to the pack in use and it is removed: deleted
// records give back only the whole file system blocks inside them, so a
// pack of small records, most deleted, would otherwise keep its space for
// as long as one lives.
const compactBelow = packSize / 4

// shouldCompactLocked says whether p is to be compacted now, and marks it
// so. The store's mu is held.
func (l *packLog) shouldCompactLocked(p *pack) bool {
	if !p.sealed || p.compacting || p.live == 0 || p.liveBytes >= compactBelow {
		return false
	}
	p.compacting = true
	return true
}

func (l *packLog) startCompaction(p *pack) {
	l.s.bg.Add(1)
	go func() {
		defer l.s.bg.Done()
		select {
		case <-time.After(l.compactDelay):
			l.compact(p)
		case <-l.closing:
		}
	}()
}

// compact copies the live records of sealed pack p to the pack in use and
// points the index at the copies; p goes once the last is moved. A crash
// midway leaves a record twice, and the start-up scan keeps one.
func (l *packLog) compact(p *pack) {
	s := l.s
	s.mu.Lock()
	gone := p.live == 0
	s.mu.Unlock()
	if gone {
		return
	}
	f, err := os.Open(p.path) // its own handle: p's is closed when it goes
	if err != nil {
		return // removed meanwhile
	}
	recs, _, _ := readPack(newPack(l.dir, p.seq, f), false)
	f.Close()
	at := func(id uint64, off int64) *replica {
		if r := s.mu.replicas[id]; r != nil && r.pack == p && r.off == off {
			return r
		}
		return nil // deleted or reopened since
	}
	for _, rec := range recs {
		s.mu.Lock()
		still := at(rec.h.id, rec.off) != nil
		s.mu.Unlock()
		if !still {
			continue
		}
		sums, data, cs, err := p.read(nil, rec.off, rec.h.id, rec.h.gs, rec.h.length)
		if err != nil {
			continue
		}
		np, noff, err := l.append(record(nil, rec.h.id, rec.h.gs, cs, sums, data))
		if err != nil {
			s.mu.Lock()
			p.compacting = false // tried again at the next deletion
			s.mu.Unlock()
			return
		}
		// (A reader that found the record here finds it gone once p is, and
		// looks it up again: see store.open.)
		size := recordSize(rec.h.length)
		s.mu.Lock()
		r := at(rec.h.id, rec.off)
		if r != nil {
			r.pack, r.off = np, noff
		}
		s.mu.Unlock()
		if r != nil {
			l.release(p, size)
		} else {
			l.drop(&replica{length: rec.h.length, pack: np, off: noff})
		}
	}
	s.mu.Lock()
	p.compacting = false // if a record could not be read, the next deletion tries again
	s.mu.Unlock()
}

// compactSparse starts compacting the packs that need it, as found at start.
func (l *packLog) compactSparse() {
	var sparse []*pack
	l.mu.Lock()
	l.s.mu.Lock()
	for _, p := range l.all {
		if l.shouldCompactLocked(p) {
			sparse = append(sparse, p)
		}
	}
	l.s.mu.Unlock()
	l.mu.Unlock()
	for _, p := range sparse {
		l.startCompaction(p)
	}
}

// record builds the record of a replica in buf if it has room, with room
// after it for the zeros to the end of its page that append writes with it.
func record(buf []byte, id, gs uint64, cs pb.ChecksumTypeProto, sums, data []byte) []byte {
	length := int64(len(data))
	if n := recordSize(length) + datasync.PageSize - 1; int64(cap(buf)) < n {
		buf = make([]byte, 0, n)
	}
	rec := buf[:recordHeaderSize]
	recordHeader(rec, id, gs, length, cs)
	rec = append(append(rec, sums...), data...)
	clear(rec[len(rec):min(cap(rec), len(rec)+datasync.PageSize-1)]) // a pooled buf's old bytes
	return rec
}

// forget closes and removes a pack that holds no records.
func (l *packLog) forget(p *pack) {
	p.close(true)
	l.mu.Lock()
	delete(l.all, p.seq)
	l.mu.Unlock()
}

// next seals the current pack, once all of it is on disk, and takes the
// spare (waiting for it to be ready), starting the one after. l.mu held.
func (l *packLog) next() error {
	if old := l.cur; old != nil {
		old.sync(false) // a failure is its records' writers' to report
		l.cur = nil
		l.s.mu.Lock()
		old.sealed = true
		gone := old.live == 0
		compact := !gone && l.shouldCompactLocked(old)
		l.s.mu.Unlock()
		if gone {
			old.close(true)
			delete(l.all, old.seq)
		}
		if compact {
			l.startCompaction(old)
		}
	}
	if l.spare == nil {
		l.spare = l.prepare()
	}
	res := <-l.spare
	l.spare = nil
	if res.err != nil {
		return res.err
	}
	l.cur, l.end = res.p, 0
	l.all[res.p.seq] = res.p
	l.spare = l.prepare()
	return nil
}

// prepare makes the next pack in the background: a file of packSize
// zeros, synced, its directory entry too.
func (l *packLog) prepare() chan spareResult {
	seq := l.nextSeq
	l.nextSeq++
	ch := make(chan spareResult, 1)
	l.s.bg.Add(1)
	go func() {
		defer l.s.bg.Done()
		p, err := createPack(l.dir, seq)
		ch <- spareResult{p, err}
	}()
	return ch
}

func createPack(dir string, seq uint64) (*pack, error) {
	path := filepath.Join(dir, packName(seq))
	f, err := openFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	fail := func(err error) (*pack, error) {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create pack %s: %w", path, err)
	}
	if _, err := datasync.WriteZeros(f, 0, packSize); err != nil {
		return fail(err)
	}
	if err := datasync.File(f); err != nil {
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	return newPack(dir, seq, f), nil
}

// close waits for a spare being made and closes every pack.
func (l *packLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.closing)
	if l.spare != nil {
		if res := <-l.spare; res.p != nil {
			res.p.close(false) // left for the next start, which removes it
		}
		l.spare = nil
	}
	var errs []error
	for _, p := range l.all {
		errs = append(errs, p.close(false))
	}
	l.all = map[uint64]*pack{}
	l.cur = nil
	return errors.Join(errs...)
}

// packedRecord is a live record found by readPack.
type packedRecord struct {
	h   parsedHeader
	p   *pack
	off int64
}

// openPacks opens a volume's packs and returns its pack log and the live
// records in them. The newest pack holding records has its records' data
// checked: the first that fails its checksums, torn by a crash before it
// was acknowledged, ends it. Packs without live records are removed.
func openPacks(s *store, root string) (*packLog, []packedRecord, error) {
	dir := filepath.Join(root, "packs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("open packs: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("open packs: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".pack"); ok {
			if seq, err := strconv.ParseUint(n, 10, 64); err == nil {
				seqs = append(seqs, seq)
			}
		}
	}
	slices.Sort(seqs)
	l := &packLog{s: s, dir: dir, all: map[uint64]*pack{}, compactDelay: 30 * time.Second, closing: make(chan struct{})}
	if len(seqs) > 0 {
		l.nextSeq = seqs[len(seqs)-1] + 1
	}
	var found []packedRecord
	check := true // until a pack with records is read, newest first
	for i := len(seqs) - 1; i >= 0; i-- {
		f, err := openFile(filepath.Join(dir, packName(seqs[i])), os.O_RDWR, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("open packs: %w", err)
		}
		p := newPack(dir, seqs[i], f)
		p.sealed = true
		recs, hadRecords, err := readPack(p, check)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		check = check && !hadRecords
		if len(recs) == 0 {
			p.close(true)
			continue
		}
		p.live = len(recs)
		for _, rec := range recs {
			p.liveBytes += recordSize(rec.h.length)
		}
		l.all[p.seq] = p
		found = append(found, recs...)
	}
	return l, found, nil
}

// readPack lists the live records of p, up to the first bytes that are
// no record (or, if check, whose data fail their checksums); hadRecords
// says whether it found a record at all, live or deleted.
func readPack(p *pack, check bool) (live []packedRecord, hadRecords bool, err error) {
	r := bufio.NewReaderSize(io.NewSectionReader(p.f, 0, packSize), 1<<20)
	hdr := make([]byte, recordHeaderSize)
	var body []byte
	for off := int64(0); ; {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return live, hadRecords, nil
		}
		h, ok := parseRecordHeader(hdr)
		if !ok {
			return live, hadRecords, nil
		}
		n := recordSize(h.length) - recordHeaderSize
		if !check || !h.live {
			if _, err := r.Discard(int(n)); err != nil {
				return live, hadRecords, nil
			}
		} else {
			body = slices.Grow(body[:0], int(n))[:n]
			if _, err := io.ReadFull(r, body); err != nil {
				return live, hadRecords, nil
			}
			tab, err := xfer.ChecksumTable(h.cs)
			nsums := xfer.NumChunks(h.length) * protocol.ChecksumSize
			if err != nil || xfer.VerifyChunks(tab, body[nsums:], body[:nsums], 0) != nil {
				// Torn, never acknowledged: cut off here, so that no later
				// start, when this is no longer the newest pack, takes it.
				if err := p.f.Truncate(off); err != nil {
					return nil, false, fmt.Errorf("cut torn record from %s: %w", p.path, err)
				}
				return live, hadRecords, datasync.File(p.f)
			}
		}
		hadRecords = true
		if h.live {
			live = append(live, packedRecord{h, p, off})
		}
		off += recordHeaderSize + n
	}
}

// PackedReplica is a replica held in a pack, as ReadPacks finds it.
type PackedReplica struct {
	ID, GenStamp uint64
	Data         []byte
}

// ReadPacks returns the replicas in the packs of data directory dir, with
// their data, for tools and tests that look at a datanode's disks (the
// datanode need not be stopped; a record being appended may be missed).
func ReadPacks(dir string) ([]PackedReplica, error) {
	names, err := filepath.Glob(filepath.Join(dir, "current", "packs", "*.pack"))
	if err != nil {
		return nil, err
	}
	var out []PackedReplica
	for _, name := range names {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // its last record deleted since it was listed
		} else if err != nil {
			return nil, fmt.Errorf("read packs: %w", err)
		}
		p := newPack(filepath.Dir(name), 0, f)
		recs, _, _ := readPack(p, false)
		for _, rec := range recs {
			_, data, _, err := p.read(nil, rec.off, rec.h.id, rec.h.gs, rec.h.length)
			if err == nil {
				out = append(out, PackedReplica{rec.h.id, rec.h.gs, data})
			}
		}
		f.Close()
	}
	return out, nil
}

package datanode

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/godfs/godfs/internal/datasync"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// The replicas' files are laid out as layout.go describes.

// ErrReplicaNotFound: the datanode holds no finalized replica of a block.
var ErrReplicaNotFound = errors.New("replica not found")

// ErrReplicaExists: a replica of the block is already here.
var ErrReplicaExists = errors.New("replica already exists")

// replica is the store's record of one finalized replica.
type replica struct {
	genStamp uint64
	length   int64
	dir      *volume
	inline   bool // one file (data and checksums), not HDFS's two
	// pack, if not nil, holds the replica as the record at off (see
	// pack.go) instead of files.
	pack *pack
	off  int64
}

// files are the names of the replica's files in its finalized directory,
// the one that marks it complete first.
func (r *replica) files(id uint64) []string {
	if r.pack != nil {
		return nil
	}
	if r.inline {
		return []string{inlineFileName(id, r.genStamp)}
	}
	return []string{metaFileName(id, r.genStamp), blockFileName(id)}
}

// volume is one data directory.
type volume struct {
	root string // <dataDir>/current
	// noDirect is set once the volume's file system refused O_DIRECT:
	// its replicas are then written through the page cache only.
	noDirect atomic.Bool
	packs    *packLog
	// failed is set once the volume failed a check (see checkVolumes):
	// it takes no replicas and its own are no longer indexed.
	failed atomic.Bool

	space struct {
		sync.Mutex
		free uint64    // bytes, as statfs last said
		at   time.Time // when
	}
}

// fullBelow is how little free space makes a volume take no new replicas:
// a pack (packSize, zeroed ahead) must fit. Writes to a datanode whose
// every volume is that full are refused when they start, with the
// reason, rather than failing midway; and it is left out of the free
// space the master is told of, so that placement passes such a node by.
const fullBelow = packSize

// spaceAge is how old a volume's free space may be when a replica is
// placed on it: a statfs at most every spaceAge per volume, and for every
// replica once less than nearFull is free (replicas arriving faster than
// spaceAge would otherwise fill it past fullBelow between two looks).
const (
	spaceAge = 250 * time.Millisecond
	nearFull = 1 << 30
)

// statfs returns the total and free bytes of the volume's file system and
// remembers the free ones.
func (v *volume) statfs() (total, free uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(v.root, &st); err != nil {
		return 0, 0, err
	}
	total, free = st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
	v.space.Lock()
	v.space.free, v.space.at = free, time.Now()
	v.space.Unlock()
	return total, free, nil
}

// free returns the volume's free bytes (see spaceAge); ok is false if
// statfs fails (the volume is then taken to have room, as before it was
// asked).
func (v *volume) free(keep uint64) (free uint64, ok bool) {
	v.space.Lock()
	free, at := v.space.free, v.space.at
	v.space.Unlock()
	if free >= keep+nearFull && time.Since(at) < spaceAge {
		return free, true
	}
	_, free, err := v.statfs()
	return free, err == nil
}

func (v *volume) finalizedDir(id uint64) string {
	return filepath.Join(v.root, "finalized", fmt.Sprintf("subdir%d", (id>>8)&(finalizedDirs-1)))
}

// finalizedDirs is how many directories finalized replicas spread over.
// They are all made when the volume opens, never while it serves: a
// replica finished on a volume whose disk has vanished fails, rather than
// making its directories again on whatever lies under the mount point.
const finalizedDirs = 32

// volumeDirs are the directories of a volume, made when it opens.
func (v *volume) volumeDirs() []string {
	dirs := []string{v.rbwDir(), v.trashDir(), filepath.Join(v.root, "corrupt")}
	for i := range uint64(finalizedDirs) {
		dirs = append(dirs, v.finalizedDir(i<<8))
	}
	return dirs
}
func (v *volume) rbwDir() string { return filepath.Join(v.root, "rbw") }

// trashDir holds the block files of deleted replicas until they are
// removed in the background (see store.discard).
func (v *volume) trashDir() string { return filepath.Join(v.root, "trash") }

// store keeps block replicas on local disks. It knows block ids, generation
// stamps and lengths only, never file names.
type store struct {
	vols []*volume
	// keepFree is how much free space a volume keeps: it takes no new
	// replica with less (fullBelow plus what Options.Reserved leaves).
	keepFree uint64
	// check is volume.check; tests put a disk that hangs in its place.
	check func(*volume) error
	bg    sync.WaitGroup // packs being made

	// trash is the queue of deleted replicas' block files that the
	// deleter removes, a step at a time (datasync.RemoveGradually).
	trash struct {
		sync.Mutex
		files []trashFile
		bytes int64         // theirs, still on disk: part of the used space
		added chan struct{} // a token when files grew
	}
	deletePause time.Duration // datasync.RemovePause; tests hold the deleter up
	deleter     sync.WaitGroup
	stop        chan struct{} // closed by close
	closeOnce   sync.Once

	mu struct {
		sync.Mutex
		replicas map[uint64]*replica
		writing  map[uint64]*replicaWriter // replicas being received (readable up to their visible length)
		next     int                       // round-robin volume choice
		used     int64
	}
}

// openStore opens (creating if needed) the data directories and indexes
// the finalized replicas on them. Leftover rbw files from a crash are
// removed: their writer was never acked for them.
func openStore(dirs []string, reserved int64) (*store, error) {
	s := &store{keepFree: fullBelow + uint64(reserved), check: (*volume).check, stop: make(chan struct{}), deletePause: datasync.RemovePause}
	s.trash.added = make(chan struct{}, 1)
	s.mu.replicas = map[uint64]*replica{}
	s.mu.writing = map[uint64]*replicaWriter{}
	for _, d := range dirs {
		v := &volume{root: filepath.Join(d, "current")}
		for _, dir := range v.volumeDirs() {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("open data dir %s: %w", d, err)
			}
		}
		if err := clearDir(v.rbwDir()); err != nil {
			return nil, err
		}
		// What a crash or a stop left in the trash goes as it would have.
		if ents, err := os.ReadDir(v.trashDir()); err == nil {
			for _, e := range ents {
				if fi, err := e.Info(); err == nil {
					s.discard(filepath.Join(v.trashDir(), e.Name()), fi.Size())
				}
			}
		}
		if err := s.scan(v); err != nil {
			return nil, err
		}
		if err := s.indexPacks(v); err != nil {
			return nil, err
		}
		s.vols = append(s.vols, v)
	}
	s.deleter.Add(1)
	go s.removeTrash()
	return s, nil
}

type trashFile struct {
	path string
	size int64
}

// discard queues path, a file of size bytes in a trash directory, for
// removal.
func (s *store) discard(path string, size int64) {
	s.trash.Lock()
	s.trash.files = append(s.trash.files, trashFile{path, size})
	s.trash.bytes += size
	s.trash.Unlock()
	select {
	case s.trash.added <- struct{}{}:
	default:
	}
}

// removeTrash removes the queued trash files one at a time until the
// store closes; what is left then is queued again by the next openStore.
// A file it fails to remove (a failing disk) also waits for that.
func (s *store) removeTrash() {
	defer s.deleter.Done()
	for {
		f, ok := s.nextTrash()
		if !ok {
			return
		}
		// Step by step: on a disk that discards freed blocks, a datanode
		// removing the 64 MiB block files of a deleted 1 GiB file at once
		// (three of them on one disk, at replication 3) held every
		// fdatasync on that disk 5-29 ms for most of a second.
		datasync.RemoveGradually(f.path, datasync.RemoveStep, s.deletePause, s.stop)
		s.trash.Lock()
		s.trash.bytes -= f.size
		s.trash.Unlock()
	}
}

// nextTrash takes the next queued trash file, waiting for one; false once
// the store closes.
func (s *store) nextTrash() (trashFile, bool) {
	for {
		select {
		case <-s.stop:
			return trashFile{}, false
		default:
		}
		s.trash.Lock()
		if len(s.trash.files) > 0 {
			f := s.trash.files[0]
			s.trash.files = s.trash.files[1:]
			s.trash.Unlock()
			return f, true
		}
		s.trash.Unlock()
		select {
		case <-s.trash.added:
		case <-s.stop:
			return trashFile{}, false
		}
	}
}

// indexPacks opens the packs of v and indexes their records. A record
// that lost to another replica of its block with a newer generation stamp
// (one a recovery wrote, the old one's deletion undone by a crash) is
// deleted.
func (s *store) indexPacks(v *volume) error {
	l, recs, err := openPacks(s, v.root)
	if err != nil {
		return err
	}
	v.packs = l
	var lost []*replica
	s.mu.Lock()
	for _, rec := range recs {
		r := &replica{genStamp: rec.h.gs, length: rec.h.length, dir: v, pack: rec.p, off: rec.off}
		if loser := s.indexLocked(rec.h.id, r); loser != nil && loser.pack != nil {
			lost = append(lost, loser)
		}
	}
	s.mu.Unlock()
	for _, r := range lost {
		r.dir.packs.drop(r)
	}
	l.compactSparse()
	return nil
}

// indexLocked adds finalized replica r of block id found at start to the
// index unless one with a newer generation stamp is there already, and
// returns the one of the two not kept, if any.
func (s *store) indexLocked(id uint64, r *replica) (loser *replica) {
	old, ok := s.mu.replicas[id]
	if ok && old.genStamp >= r.genStamp {
		return r
	}
	if ok {
		s.mu.used -= old.length
	}
	s.mu.replicas[id] = r
	s.mu.used += r.length
	return old
}

// close waits for packs being made and closes the volumes' packs.
func (s *store) close() error {
	var errs []error
	for _, v := range s.vols {
		errs = append(errs, v.packs.close())
	}
	s.bg.Wait()
	s.closeOnce.Do(func() { close(s.stop) })
	s.deleter.Wait()
	return errors.Join(errs...)
}

func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("clear %s: %w", dir, err)
		}
	}
	return nil
}

// scan indexes the finalized replicas of a volume. A datanode holding a
// million replicas stats a million files at start: directories are read
// by several workers (the disk may serve several requests at once, and
// the kernel's work spreads over the cores), each file stated relative to
// its open directory.
func (s *store) scan(v *volume) error {
	var (
		firstErr error
		workers  sync.WaitGroup
		pending  sync.WaitGroup // directories found and not yet scanned
	)
	work := make(chan string)
	for range 4 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for dir := range work {
				found, subdirs, err := scanDir(dir)
				s.mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				for _, f := range found {
					s.indexLocked(f.ID, &replica{genStamp: f.GenStamp, length: f.Len, dir: v, inline: f.inline})
				}
				s.mu.Unlock()
				pending.Add(len(subdirs))
				for _, d := range subdirs {
					go func() { work <- d }()
				}
				pending.Done()
			}
		}()
	}
	pending.Add(1)
	work <- filepath.Join(v.root, "finalized")
	pending.Wait()
	close(work)
	workers.Wait()
	return firstErr
}

// scanDir lists the finalized replicas in one directory (a block file
// with a meta file beside it, or a one-file replica of a valid size), and
// its subdirectories.
func scanDir(dir string) (found []foundReplica, subdirs []string, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1) // unsorted, unlike os.ReadDir
	if err != nil {
		return nil, nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() {
			subdirs = append(subdirs, filepath.Join(dir, name))
			continue
		}
		id, gs, inline, ok := parseReplicaName(name)
		if !ok {
			continue
		}
		if inline {
			size, err := sizeAt(f, name)
			length, ok := inlineLength(size)
			if err != nil || !ok {
				continue // damaged: the master has it copied from another replica
			}
			found = append(found, foundReplica{blockInfo{ID: id, GenStamp: gs, Len: length}, true})
			continue
		}
		size, err := sizeAt(f, blockFileName(id))
		if err != nil {
			continue // a meta file without data: not a replica
		}
		found = append(found, foundReplica{blockInfo{ID: id, GenStamp: gs, Len: size}, false})
	}
	return found, subdirs, nil
}

type foundReplica struct {
	blockInfo
	inline bool
}

// get returns the finalized replica of id.
func (s *store) get(id uint64) (replica, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.mu.replicas[id]
	if !ok {
		return replica{}, false
	}
	return *r, true
}

// blockInfo is a finalized replica as reported to the master.
type blockInfo struct {
	ID, GenStamp uint64
	Len          int64
}

func (s *store) list() []blockInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]blockInfo, 0, len(s.mu.replicas))
	for id, r := range s.mu.replicas {
		out = append(out, blockInfo{id, r.genStamp, r.length})
	}
	return out
}

// usage is the bytes of the indexed replicas and of the deleted ones
// still being removed (as HDFS's DfsUsed counts a block file until it is
// gone), and the replicas' count.
func (s *store) usage() (used int64, blocks int) {
	s.trash.Lock()
	trash := s.trash.bytes
	s.trash.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.used + trash, len(s.mu.replicas)
}

// check tells whether the volume still works: its directories are there
// and a file can be made in it (a dead disk fails these with EIO, a
// vanished one with ENOENT, one remounted read-only with EROFS).
func (v *volume) check() error {
	for _, sub := range []string{"finalized", "rbw"} {
		fi, err := os.Stat(filepath.Join(v.root, sub))
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", filepath.Join(v.root, sub))
		}
	}
	probe := filepath.Join(v.rbwDir(), ".check")
	f, err := os.Create(probe)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return nil // full, not failed (see fullBelow)
	}
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(probe)
}

// checkTimeout is how long a volume's check may take before the volume
// counts as failed: a disk that hangs rather than failing would otherwise
// hold up the heartbeats, and the master would give up on every volume of
// the datanode.
var checkTimeout = 10 * time.Second

// checkVolumes checks each working volume and takes those that fail out
// of service: they get no new replicas, and their replicas leave the
// index and are returned, for the master to be told they are gone (it
// copies them again from other replicas). A disk that comes back is used
// again after a restart.
func (s *store) checkVolumes() (lost []blockInfo, failed map[string]error) {
	for _, v := range s.vols {
		if v.failed.Load() {
			continue
		}
		done := make(chan error, 1) // a hung check's goroutine ends whenever the disk answers
		go func() { done <- s.check(v) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(checkTimeout):
			err = fmt.Errorf("check did not finish in %v", checkTimeout)
		}
		if err == nil {
			continue
		}
		if failed == nil {
			failed = map[string]error{}
		}
		failed[filepath.Dir(v.root)] = err
		v.failed.Store(true)
		s.mu.Lock()
		for id, r := range s.mu.replicas {
			if r.dir == v {
				delete(s.mu.replicas, id)
				s.mu.used -= r.length
				lost = append(lost, blockInfo{id, r.genStamp, r.length})
			}
		}
		s.mu.Unlock()
	}
	return lost, failed
}

// working is how many volumes have not failed.
func (s *store) working() int {
	n := 0
	for _, v := range s.vols {
		if !v.failed.Load() {
			n++
		}
	}
	return n
}

// capacity returns total bytes of the working volumes' file systems and
// the free bytes new replicas may take (each volume's above keepFree).
func (s *store) capacity() (total, free uint64) {
	for _, v := range s.vols {
		if v.failed.Load() {
			continue
		}
		if t, f, err := v.statfs(); err == nil {
			total += t
			free += max(f, s.keepFree) - s.keepFree
		}
	}
	return total, free
}

// volumeLocked picks the volume for a new replica: the next in turn that
// works and is not full (see keepFree). s.mu must be held.
func (s *store) volumeLocked() (*volume, error) {
	var full []string
	for i := range s.vols {
		v := s.vols[(s.mu.next+i)%len(s.vols)]
		if v.failed.Load() {
			continue
		}
		free, ok := v.free(s.keepFree)
		if !ok || free >= s.keepFree {
			s.mu.next += i + 1
			return v, nil
		}
		full = append(full, fmt.Sprintf("%s %.1f MiB", filepath.Dir(v.root), float64(free)/(1<<20)))
	}
	if len(full) == 0 {
		return nil, errors.New("every volume has failed")
	}
	return nil, fmt.Errorf("%w: every working volume has less than %d MiB free (%s)", syscall.ENOSPC, s.keepFree>>20, strings.Join(full, ", "))
}

// replicaWriter receives one replica into rbw/ and publishes it on finish.
// Only the goroutine receiving the replica calls its methods; readers of
// the replica being written take moving, and sumsMu for the checksums.
type replicaWriter struct {
	s      *store
	v      *volume
	id, gs uint64
	cs     pb.ChecksumTypeProto
	// data is the replica's file in rbw/, nil while the replica is held
	// in buf (up to packMax bytes, then spilled; see pack.go). Set under
	// moving.
	data *os.File
	buf  []byte // guarded by sumsMu
	// meta is the separate checksum file, nil while the replica is small
	// enough to be one file (its checksums then in sums). Set under moving.
	meta  *os.File
	metaW *bufio.Writer
	// stage, once a replica has its .meta file, gathers its data for
	// writes that bypass the page cache (see direct.go). Set under moving.
	stage  *stage
	sumsMu sync.Mutex
	sums   []byte // guarded by sumsMu
	length int64
	// wroteBack is how much of the data file the kernel was asked to
	// start writing to disk (see startWriteback); flushing is set while a
	// background fsync runs.
	wroteBack int64
	flushing  atomic.Bool
	finished  atomic.Bool // finalized or aborted: the replica is no longer in rbw/
	// moving is held while the replica's files change directory or layout
	// (finish, reopen, the move to two files), so that a reader opens
	// them where and as the store says they are.
	moving sync.Mutex
	// visible is how much of the replica readers may see while it is
	// being written: everything written and flushed so far.
	visible atomic.Int64
}

// create starts a new replica of block id whose checksums are of type cs.
func (s *store) create(id, gs uint64, cs pb.ChecksumTypeProto) (*replicaWriter, error) {
	s.mu.Lock()
	if _, ok := s.mu.replicas[id]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("create replica of block %d: %w", id, ErrReplicaExists)
	}
	if s.mu.writing[id] != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("create replica of block %d: %w (being written)", id, ErrReplicaExists)
	}
	v, err := s.volumeLocked()
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("create replica of block %d: %w", id, err)
	}
	w := &replicaWriter{s: s, v: v, id: id, gs: gs, cs: cs}
	s.mu.writing[id] = w
	s.mu.Unlock()
	return w, nil // in memory until it outgrows packMax
}

// spill moves a replica being written in memory to its data file in rbw/.
func (w *replicaWriter) spill() error {
	w.moving.Lock()
	defer w.moving.Unlock()
	f, err := openFile(filepath.Join(w.v.rbwDir(), blockFileName(w.id)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create replica of block %d: %w", w.id, err)
	}
	w.data = f // from here on abort removes it
	w.sumsMu.Lock()
	buf := w.buf
	w.buf = nil
	w.sumsMu.Unlock()
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("write block %d: %w", w.id, err)
	}
	return nil
}

// write appends data and its chunk checksums. Data must start on a chunk
// boundary.
func (w *replicaWriter) write(data, sums []byte) error {
	if err := w.prepare(len(data)); err != nil {
		return err
	}
	if err := w.store(data); err != nil {
		return err
	}
	return w.wrote(len(data), sums)
}

// store appends data to the replica (prepared for it), through its stage
// if it has one.
func (w *replicaWriter) store(data []byte) error {
	if w.data == nil {
		w.sumsMu.Lock()
		w.buf = append(w.buf, data...)
		w.sumsMu.Unlock()
	} else if w.stage != nil {
		if err := w.stage.add(data); err != nil {
			return fmt.Errorf("write block %d: %w", w.id, err)
		}
	} else if _, err := w.data.Write(data); err != nil {
		return fmt.Errorf("write block %d: %w", w.id, err)
	}
	return nil
}

// prepare readies the replica for n more bytes of data: its data file
// once it outgrows packMax, its .meta file once it outgrows inlineMax,
// then its stage.
func (w *replicaWriter) prepare(n int) error {
	if w.length%protocol.BytesPerChecksum != 0 {
		return fmt.Errorf("block %d: write at %d is not on a chunk boundary", w.id, w.length)
	}
	if w.data == nil && w.length+int64(n) > packMax {
		if err := w.spill(); err != nil {
			return err
		}
	}
	if w.meta == nil && w.length+int64(n) > inlineMax {
		if err := w.splitChecksums(); err != nil {
			return err
		}
	}
	if w.meta != nil && w.stage == nil && !w.v.noDirect.Load() {
		return w.startStage()
	}
	return nil
}

// wrote records n bytes of data just stored and their checksums, and
// makes them visible to readers.
func (w *replicaWriter) wrote(n int, sums []byte) error {
	if w.meta == nil {
		w.sumsMu.Lock()
		w.sums = append(w.sums, sums...)
		w.sumsMu.Unlock()
	} else {
		if _, err := w.metaW.Write(sums); err != nil {
			return fmt.Errorf("write block %d checksums: %w", w.id, err)
		}
		// Flushed per packet so that readers of a replica being written
		// (after hflush) find the checksums of what they read.
		if err := w.metaW.Flush(); err != nil {
			return fmt.Errorf("write block %d checksums: %w", w.id, err)
		}
	}
	w.length += int64(n)
	w.visible.Store(w.length)
	if w.length-w.wroteBack >= writebackChunk {
		startWriteback(w.data, w.wroteBack, w.length-w.wroteBack)
		w.wroteBack = w.length
		// The fsync that finalizes the replica must also flush the disk's
		// cache, which costs as much as the data written since the last
		// flush (~120 ms for a 64 MiB block here, with the pipeline idle
		// meanwhile); flushing as the data comes, in the background and
		// one at a time, leaves it ~15 ms.
		if f := w.data; w.flushing.CompareAndSwap(false, true) {
			go func() {
				f.Sync() // a file closed meanwhile just fails
				w.flushing.Store(false)
			}()
		}
	}
	return nil
}

// splitChecksums moves a replica that outgrows inlineMax to HDFS's layout:
// its checksums so far go to a .meta file of their own.
func (w *replicaWriter) splitChecksums() error {
	w.moving.Lock()
	defer w.moving.Unlock()
	meta, err := openFile(filepath.Join(w.v.rbwDir(), metaFileName(w.id, w.gs)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create block %d checksums: %w", w.id, err)
	}
	mw := bufio.NewWriterSize(meta, 8<<10)
	mw.Write(metaHeader(w.cs))
	w.sumsMu.Lock()
	mw.Write(w.sums)
	w.sums = nil
	w.sumsMu.Unlock()
	w.meta, w.metaW = meta, mw // from here on abort removes it
	if err := mw.Flush(); err != nil {
		return fmt.Errorf("write block %d checksums: %w", w.id, err)
	}
	return nil
}

// writebackChunk is how much written data a replica lets pile up in the
// page cache before it starts writing it to disk.
const writebackChunk = 8 << 20

// rewind cuts the replica back to off, the start of its last, partial
// chunk: a writer that flushed in the middle of a chunk sends that chunk
// again, whole, with the bytes that follow.
func (w *replicaWriter) rewind(off int64) error {
	if off%protocol.BytesPerChecksum != 0 || off > w.length || w.length-off >= protocol.BytesPerChecksum {
		return fmt.Errorf("block %d: packet at %d does not restart the last chunk of %d bytes", w.id, off, w.length)
	}
	w.visible.Store(off)
	w.wroteBack = min(w.wroteBack, off)
	if err := w.truncate(off); err != nil {
		return fmt.Errorf("block %d: rewind to %d: %w", w.id, off, err)
	}
	return nil
}

// truncate cuts the replica being written to length bytes (and the
// checksums of the chunks they start) and goes on writing there.
func (w *replicaWriter) truncate(length int64) error {
	if w.data == nil {
		w.sumsMu.Lock()
		w.buf = w.buf[:length]
		w.sums = w.sums[:xfer.NumChunks(length)*protocol.ChecksumSize]
		w.sumsMu.Unlock()
		w.length = length
		return nil
	}
	if w.stage != nil {
		if err := w.stage.cut(w.data, length); err != nil {
			return err
		}
	} else if err := w.data.Truncate(length); err != nil {
		return err
	}
	if _, err := w.data.Seek(length, io.SeekStart); err != nil {
		return err
	}
	sumsLen := xfer.NumChunks(length) * protocol.ChecksumSize
	if w.meta == nil {
		w.sumsMu.Lock()
		w.sums = w.sums[:sumsLen]
		w.sumsMu.Unlock()
	} else {
		if err := w.meta.Truncate(metaHeaderSize + sumsLen); err != nil {
			return err
		}
		if _, err := w.meta.Seek(metaHeaderSize+sumsLen, io.SeekStart); err != nil {
			return err
		}
	}
	w.length = length
	return nil
}

// finish syncs the replica and moves it to finalized/ (data first, then the
// file that marks the replica complete), then syncs the directory so the
// rename survives a crash. A one-file replica gets its checksums and
// header appended first.
func (w *replicaWriter) finish() error {
	w.moving.Lock()
	defer w.moving.Unlock()
	if w.data == nil {
		return w.finishPacked()
	}
	inline := w.meta == nil
	if inline {
		w.sumsMu.Lock()
		tail := append(w.sums, metaHeader(w.cs)...)
		w.sumsMu.Unlock()
		if _, err := w.data.Write(tail); err != nil {
			return w.fail(err)
		}
	} else if err := w.metaW.Flush(); err != nil {
		return w.fail(err)
	}
	if w.stage != nil {
		if err := w.stage.flush(w.data, w.length); err != nil {
			return w.fail(err)
		}
	}
	if err := w.data.Sync(); err != nil {
		return w.fail(err)
	}
	if !inline {
		if err := w.meta.Sync(); err != nil {
			return w.fail(err)
		}
		w.meta.Close()
	}
	w.data.Close()
	w.closeStage()
	dir := w.v.finalizedDir(w.id)
	r := &replica{genStamp: w.gs, length: w.length, dir: w.v, inline: inline}
	if inline {
		if err := os.Rename(filepath.Join(w.v.rbwDir(), blockFileName(w.id)), filepath.Join(dir, inlineFileName(w.id, w.gs))); err != nil {
			return w.fail(err)
		}
	} else {
		if err := os.Rename(filepath.Join(w.v.rbwDir(), blockFileName(w.id)), filepath.Join(dir, blockFileName(w.id))); err != nil {
			return w.fail(err)
		}
		if err := os.Rename(filepath.Join(w.v.rbwDir(), metaFileName(w.id, w.gs)), filepath.Join(dir, metaFileName(w.id, w.gs))); err != nil {
			return w.fail(err)
		}
	}
	// Syncing the directory the replica moved into persists the rename; the
	// old rbw entry needs no sync (a leftover one is cleared at start).
	if err := syncDir(dir); err != nil {
		return w.fail(err)
	}
	w.publish(r)
	return nil
}

// finishPacked appends a replica held in memory to its volume's packs.
// w.moving is held.
func (w *replicaWriter) finishPacked() error {
	buf := recordBuffers.Get().(*[]byte)
	defer recordBuffers.Put(buf) // append has written rec by then
	w.sumsMu.Lock()
	rec := record(*buf, w.id, w.gs, w.cs, w.sums, w.buf)
	w.sumsMu.Unlock()
	p, off, err := w.v.packs.append(rec)
	if err != nil {
		return w.fail(err)
	}
	w.publish(&replica{genStamp: w.gs, length: w.length, dir: w.v, pack: p, off: off})
	return nil
}

// publish moves the finished replica from the writers to the index.
func (w *replicaWriter) publish(r *replica) {
	w.finished.Store(true)
	s := w.s
	s.mu.Lock()
	delete(s.mu.writing, w.id)
	s.mu.replicas[w.id] = r
	s.mu.used += w.length
	s.mu.Unlock()
}

func (w *replicaWriter) fail(err error) error {
	w.abort()
	return fmt.Errorf("finalize block %d: %w", w.id, err)
}

// abort drops a replica that was not finished.
func (w *replicaWriter) abort() {
	if w.finished.Swap(true) {
		return
	}
	if w.data != nil {
		w.data.Close()
	}
	if w.meta != nil {
		w.meta.Close()
	}
	w.closeStage()
	os.Remove(filepath.Join(w.v.rbwDir(), blockFileName(w.id)))
	os.Remove(filepath.Join(w.v.rbwDir(), metaFileName(w.id, w.gs))) // if it got one
	w.s.mu.Lock()
	delete(w.s.mu.writing, w.id)
	w.s.mu.Unlock()
}

// replicaReader reads a replica and its checksums.
type replicaReader struct {
	id, gs uint64
	length int64
	tab    *crc32.Table // the checksum type the replica was written with
	data   *os.File
	// sums holds the checksums, the first at sumsOff: the .meta file, the
	// one file itself, or a copy of what a writer holds in memory.
	sums    io.ReaderAt
	sumsOff int64
	meta    *os.File // the .meta file, nil in the one-file layout
	// tail, if not nil, holds the bytes from tailOff on, which a replica
	// being written has not written to its data file yet (see stage).
	tail    []byte
	tailOff int64
	// finalized is set for a replica whose data is all written and
	// synced: it may be mapped (see sendable).
	finalized bool
	// record, if not nil, is the pooled buffer a packed replica's record
	// was read into (tail and sums are in it), given back on Close.
	record *[]byte
}

// recordBuffers hold the records of packed replicas being read or
// written, with room for the zeros to the end of a written one's page: a
// 4 KiB replica would otherwise allocate (and clear) one each time.
var recordBuffers = sync.Pool{New: func() any {
	b := make([]byte, recordSize(packMax)+datasync.PageSize-1)
	return &b
}}

// open opens the replica of id, finalized or being written, for reading.
func (s *store) open(id uint64) (*replicaReader, error) {
	// A replica being finalized or reopened for recovery moves between the
	// writing and finalized maps (under one hold of s.mu, so both are
	// looked in under one): a reader that finds it gone from where it
	// looked looks again.
	for {
		var r replica
		s.mu.Lock()
		rp, ok := s.mu.replicas[id]
		if ok {
			r = *rp // compaction moves it to another pack in place
		}
		w := s.mu.writing[id]
		s.mu.Unlock()
		if ok {
			rr, err := openFinalized(id, r)
			if now, ok := s.get(id); errors.Is(err, fs.ErrNotExist) && (!ok || now != r) {
				continue // moved: reopened, or its record to another pack
			}
			return rr, err
		}
		if w == nil {
			return nil, fmt.Errorf("block %d: %w", id, ErrReplicaNotFound)
		}
		w.moving.Lock()
		if !w.finished.Load() {
			rr, err := w.openBeingWritten()
			w.moving.Unlock()
			return rr, err
		}
		w.moving.Unlock()
	}
}

// openFinalized opens the files of finalized replica r of id.
func openFinalized(id uint64, r replica) (*replicaReader, error) {
	if r.pack != nil {
		buf := recordBuffers.Get().(*[]byte)
		sums, data, cs, err := r.pack.read(*buf, r.off, id, r.genStamp, r.length)
		if err == nil {
			var rr *replicaReader
			if rr, err = memoryReader(id, r.genStamp, cs, data, sums); err == nil {
				rr.record = buf
				return rr, nil
			}
		}
		recordBuffers.Put(buf)
		return nil, err
	}
	dir := r.dir.finalizedDir(id)
	if !r.inline {
		rr, err := openTwoFiles(id, r.genStamp, r.length, dir)
		if err == nil {
			rr.finalized = true
		}
		return rr, err
	}
	f, err := openFile(filepath.Join(dir, inlineFileName(id, r.genStamp)), os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open block %d: %w", id, err)
	}
	tab, err := readMetaHeader(f, inlineSize(r.length)-metaHeaderSize, id)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &replicaReader{id: id, gs: r.genStamp, length: r.length, tab: tab, data: f, sums: f, sumsOff: r.length, finalized: true}, nil
}

// openTwoFiles opens a replica in HDFS's layout in dir.
func openTwoFiles(id, gs uint64, length int64, dir string) (*replicaReader, error) {
	data, err := openFile(filepath.Join(dir, blockFileName(id)), os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open block %d: %w", id, err)
	}
	meta, err := openFile(filepath.Join(dir, metaFileName(id, gs)), os.O_RDONLY, 0)
	if err != nil {
		data.Close()
		return nil, fmt.Errorf("open block %d checksums: %w", id, err)
	}
	tab, err := readMetaHeader(meta, 0, id)
	if err != nil {
		data.Close()
		meta.Close()
		return nil, err
	}
	return &replicaReader{id: id, gs: gs, length: length, tab: tab, data: data, sums: meta, sumsOff: metaHeaderSize, meta: meta}, nil
}

// openBeingWritten opens the replica for reading up to what was flushed.
// w.moving must be held.
func (w *replicaWriter) openBeingWritten() (*replicaReader, error) {
	length := w.visible.Load()
	if w.meta != nil {
		rr, err := openTwoFiles(w.id, w.gs, length, w.v.rbwDir())
		if err == nil && w.stage != nil {
			rr.tailOff, rr.tail = w.stage.tail(length)
		}
		return rr, err
	}
	if w.data == nil {
		w.sumsMu.Lock()
		data := bytes.Clone(w.buf[:length])
		sums := bytes.Clone(w.sums[:xfer.NumChunks(length)*protocol.ChecksumSize])
		w.sumsMu.Unlock()
		return memoryReader(w.id, w.gs, w.cs, data, sums)
	}
	tab, err := xfer.ChecksumTable(w.cs)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", w.id, err)
	}
	data, err := openFile(filepath.Join(w.v.rbwDir(), blockFileName(w.id)), os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open block %d: %w", w.id, err)
	}
	w.sumsMu.Lock()
	sums := bytes.Clone(w.sums[:min(int64(len(w.sums)), xfer.NumChunks(length)*protocol.ChecksumSize)])
	w.sumsMu.Unlock()
	return &replicaReader{id: w.id, gs: w.gs, length: length, tab: tab, data: data, sums: bytes.NewReader(sums)}, nil
}

// memoryReader reads a replica held in memory: read from a pack, or
// being written and not yet spilled to a file.
func memoryReader(id, gs uint64, cs pb.ChecksumTypeProto, data, sums []byte) (*replicaReader, error) {
	tab, err := xfer.ChecksumTable(cs)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", id, err)
	}
	if data == nil {
		data = []byte{} // a tail, even if empty
	}
	return &replicaReader{id: id, gs: gs, length: int64(len(data)), tab: tab, sums: bytes.NewReader(sums), tail: data}, nil
}

// readChunks reads data[off:off+n] and the checksums that cover it; off
// must be on a chunk boundary.
func (rr *replicaReader) readChunks(off int64, data, sums []byte) error {
	if rr.tail != nil && off+int64(len(data)) > rr.tailOff {
		if off+int64(len(data)) > rr.tailOff+int64(len(rr.tail)) {
			return fmt.Errorf("read block %d at %d: %d bytes past what was written", rr.id, off, len(data))
		}
		k := max(0, rr.tailOff-off) // bytes before the tail, from the file
		copy(data[k:], rr.tail[off+k-rr.tailOff:])
		data = data[:k]
	}
	if len(data) > 0 {
		if _, err := rr.data.ReadAt(data, off); err != nil {
			return fmt.Errorf("read block %d at %d: %w", rr.id, off, err)
		}
	}
	return rr.readSums(off, sums)
}

// readSums reads the checksums of the chunks from off on into sums.
func (rr *replicaReader) readSums(off int64, sums []byte) error {
	chunk := off / protocol.BytesPerChecksum
	if _, err := rr.sums.ReadAt(sums, rr.sumsOff+chunk*protocol.ChecksumSize); err != nil {
		return fmt.Errorf("read block %d checksums: %w", rr.id, err)
	}
	return nil
}

// sendable is readChunks for data on its way to a socket: if mayMap and
// the replica is finalized and the data all in the page cache, it is
// mapped instead of read into buf (one copy less; unmap the mapping
// returned once it is sent). Data not cached is read, since the kernel's
// readahead keeps the disk busier for reads than for faults of a mapping,
// and so is less than minMapped, for which the copy saved costs less than
// the mapping's three extra system calls.
func (rr *replicaReader) sendable(off int64, buf, sums []byte, mayMap bool) (data, mapping []byte, err error) {
	if mayMap && rr.finalized && len(buf) >= minMapped {
		if d, m, ok := mapCached(rr.data, off, len(buf)); ok {
			if err := rr.readSums(off, sums); err != nil {
				unmapData(m)
				return nil, nil, err
			}
			return d, m, nil
		}
	}
	return buf, nil, rr.readChunks(off, buf, sums)
}

// minMapped is the least data sendable maps.
const minMapped = 64 << 10

// eachPacket reads the whole replica in packet-sized pieces, verifies each
// against its stored checksums and hands it to fn. A checksum failure
// wraps protocol.ErrCorruption; fn's slices are reused between calls.
func (rr *replicaReader) eachPacket(fn func(off int64, data, sums []byte) error) error {
	data := make([]byte, min(protocol.MaxPacketData, rr.length))
	sums := make([]byte, xfer.NumChunks(int64(len(data)))*protocol.ChecksumSize)
	for off := int64(0); off < rr.length; {
		k := min(int64(len(data)), rr.length-off)
		ns := xfer.NumChunks(k) * protocol.ChecksumSize
		if err := rr.readChunks(off, data[:k], sums[:ns]); err != nil {
			return err
		}
		if err := xfer.VerifyChunks(rr.tab, data[:k], sums[:ns], off/protocol.BytesPerChecksum); err != nil {
			return fmt.Errorf("block %d: %w", rr.id, err)
		}
		if err := fn(off, data[:k], sums[:ns]); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// allSums returns a reader over the replica's checksums.
func (rr *replicaReader) allSums() io.Reader {
	return io.NewSectionReader(rr.sums, rr.sumsOff, xfer.NumChunks(rr.length)*protocol.ChecksumSize)
}

// checkSize reports, wrapping protocol.ErrCorruption, files of a
// finalized replica whose sizes do not match its length: data that grew,
// or checksums lost.
func (rr *replicaReader) checkSize() error {
	if rr.data == nil {
		return nil // in memory: its record's header named its length
	}
	if rr.meta == nil {
		if fi, err := rr.data.Stat(); err != nil || fi.Size() != inlineSize(rr.length) {
			return fmt.Errorf("%w: block file does not hold %d bytes and their checksums", protocol.ErrCorruption, rr.length)
		}
		return nil
	}
	if fi, err := rr.data.Stat(); err != nil || fi.Size() != rr.length {
		return fmt.Errorf("%w: data file is not %d bytes long", protocol.ErrCorruption, rr.length)
	}
	if fi, err := rr.meta.Stat(); err != nil || fi.Size() != metaHeaderSize+xfer.NumChunks(rr.length)*protocol.ChecksumSize {
		return fmt.Errorf("%w: checksum file does not match %d bytes of data", protocol.ErrCorruption, rr.length)
	}
	return nil
}

func (rr *replicaReader) Close() error {
	if rr.record != nil {
		recordBuffers.Put(rr.record)
		rr.record, rr.tail, rr.sums = nil, nil, nil
	}
	var err error
	if rr.data != nil {
		err = rr.data.Close()
	}
	if rr.meta != nil {
		err = errors.Join(err, rr.meta.Close())
	}
	return err
}

// remove deletes the replica of id if its generation stamp is at most gs
// (a newer replica written since the master asked is kept).
func (s *store) remove(id, gs uint64) (bool, error) {
	r, ok := s.take(id, func(r *replica) bool { return gs == 0 || r.genStamp <= gs })
	if !ok {
		return false, nil
	}
	if r.pack != nil {
		return true, r.dir.packs.drop(&r)
	}
	dir := r.dir.finalizedDir(id)
	// The file that marks it complete first: a replica without it is no
	// replica on restart.
	var errs []error
	for _, name := range r.files(id) {
		path := filepath.Join(dir, name)
		if name == blockFileName(id) && r.length > datasync.RemoveStep {
			// Out of the way of a new replica of the block at once, and
			// off the disk in the background.
			trash := filepath.Join(r.dir.trashDir(), fmt.Sprintf("%s.%d", name, time.Now().UnixNano()))
			if err := os.Rename(path, trash); err == nil {
				s.discard(trash, r.length)
				continue
			}
		}
		errs = append(errs, os.Remove(path))
	}
	if err := errors.Join(errs...); err != nil {
		return true, fmt.Errorf("delete block %d: %w", id, err)
	}
	return true, nil
}

// take removes the finalized replica of id from the index if ok approves
// of it, and returns it; its files are the caller's to move or delete.
func (s *store) take(id uint64, ok func(*replica) bool) (replica, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, found := s.mu.replicas[id]
	if !found || !ok(r) {
		return replica{}, false
	}
	delete(s.mu.replicas, id)
	s.mu.used -= r.length
	return *r, true
}

func syncDir(dir string) error {
	d, err := openFile(dir, os.O_RDONLY, 0) // without os.Open's poller and O_NONBLOCK calls (see openFile)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// quarantine moves a replica with generation stamp gs to
// <volume>/current/corrupt/, out of the index: it is no longer served or
// reported, but kept for inspection. It reports false when that replica is
// no longer there (deleted, or reopened by pipeline recovery meanwhile).
func (s *store) quarantine(id, gs uint64) (bool, error) {
	r, ok := s.take(id, func(r *replica) bool { return r.genStamp == gs })
	if !ok {
		return false, nil
	}
	from := r.dir.finalizedDir(id)
	to := filepath.Join(r.dir.root, "corrupt")
	if r.pack != nil {
		// Copied out as a one-file replica, for inspection.
		sums, data, cs, err := r.pack.read(nil, r.off, id, gs, r.length)
		if err == nil {
			err = os.WriteFile(filepath.Join(to, inlineFileName(id, gs)), slices.Concat(data, sums, metaHeader(cs)), 0o644)
		}
		return true, errors.Join(err, r.dir.packs.drop(&r))
	}
	var errs []error
	for _, name := range r.files(id) {
		errs = append(errs, os.Rename(filepath.Join(from, name), filepath.Join(to, name)))
	}
	return true, errors.Join(errs...)
}

// reopen turns a finalized replica back into one being written, for
// pipeline recovery: the replica must have generation stamp oldGS and at
// least length bytes; it is cut to length and takes newGS. The caller
// continues writing at length.
func (s *store) reopen(id, oldGS, newGS uint64, length int64) (*replicaWriter, error) {
	s.mu.Lock()
	r, ok := s.mu.replicas[id]
	switch {
	case s.mu.writing[id] != nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("recover block %d: %w (being written)", id, ErrReplicaExists)
	case !ok:
		s.mu.Unlock()
		return nil, fmt.Errorf("recover block %d: %w", id, ErrReplicaNotFound)
	case r.genStamp < oldGS || r.genStamp >= newGS:
		// (Between the two: an earlier recovery attempt got this far.)
		s.mu.Unlock()
		return nil, fmt.Errorf("recover block %d: replica has generation stamp %d, want %d..%d", id, r.genStamp, oldGS, newGS-1)
	case r.length < length:
		s.mu.Unlock()
		return nil, fmt.Errorf("recover block %d: replica has %d bytes, fewer than the %d acknowledged", id, r.length, length)
	}
	delete(s.mu.replicas, id)
	s.mu.used -= r.length
	v := r.dir
	w := &replicaWriter{s: s, v: v, id: id, gs: newGS, length: r.length}
	w.visible.Store(length)
	w.moving.Lock() // before readers can find w: its files are still in finalized/
	defer w.moving.Unlock()
	s.mu.writing[id] = w
	s.mu.Unlock()

	fail := func(err error) (*replicaWriter, error) {
		w.abort()
		return nil, fmt.Errorf("recover block %d: %w", id, err)
	}
	fin := v.finalizedDir(id)
	dataPath := filepath.Join(v.rbwDir(), blockFileName(id))
	var err error
	if r.pack != nil {
		// Back into memory, and its record deleted.
		sums, data, cs, err := r.pack.read(nil, r.off, id, r.genStamp, r.length)
		if err != nil {
			return fail(err)
		}
		w.cs, w.buf, w.sums = cs, data, sums
		if err := v.packs.drop(r); err != nil {
			return fail(err)
		}
	} else if r.inline {
		// Copied into a new data file, its checksums into memory: a reader
		// that opened the finalized file reads on from it unchanged (its
		// checksums sit where the data would now grow).
		old, err := openFinalized(id, *r)
		if err != nil {
			return fail(err)
		}
		defer old.Close()
		w.cs = xfer.ChecksumType(old.tab)
		if w.data, err = openFile(dataPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
			return fail(err)
		}
		if _, err := io.Copy(w.data, io.NewSectionReader(old.data, 0, length)); err != nil {
			return fail(err)
		}
		w.sums = make([]byte, xfer.NumChunks(length)*protocol.ChecksumSize)
		if _, err := old.sums.ReadAt(w.sums, old.sumsOff); err != nil {
			return fail(err)
		}
		if err := os.Remove(filepath.Join(fin, inlineFileName(id, r.genStamp))); err != nil {
			return fail(err)
		}
	} else {
		metaPath := filepath.Join(v.rbwDir(), metaFileName(id, newGS))
		if err := os.Rename(filepath.Join(fin, blockFileName(id)), dataPath); err != nil {
			return fail(err)
		}
		if err := os.Rename(filepath.Join(fin, metaFileName(id, r.genStamp)), metaPath); err != nil {
			return fail(err)
		}
		if w.data, err = openFile(dataPath, os.O_RDWR, 0); err != nil {
			return fail(err)
		}
		if w.meta, err = openFile(metaPath, os.O_RDWR, 0); err != nil {
			return fail(err)
		}
		w.metaW = bufio.NewWriterSize(w.meta, 8<<10)
	}
	if err := w.truncate(length); err != nil {
		return fail(err)
	}
	return w, nil
}

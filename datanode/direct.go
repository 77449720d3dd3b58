package datanode

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/godfs/godfs/protocol/xfer"
)

// A big replica's data goes to disk in stageSize pieces written with
// O_DIRECT, not through the page cache: copying into the page cache was
// 61% of all CPU of a put at replication 3 here (three datanodes on two
// cores), and the kernel writes the pages back later at a cost of its own.
// Written straight from an aligned buffer, the disk takes 2 GiB in 0.33 s
// of CPU instead of 4.2 s (dd here). A replica's first inlineMax bytes and
// a small replica's whole go through the page cache as before, since a
// small replica is finished and fsynced before a stage would fill.
//
// The price: data just written is not in the page cache, so its first
// read comes from the disk (530 MB/s and 2 s of CPU a GiB here, buffered;
// the page cache serves the next reads). Reading it with O_DIRECT too
// (900 MB/s, 0.12 s) would never warm the cache, and reading with one
// 1 MiB read at a time ran at 500-800 MB/s: slower than a warm cache.

const (
	// directAlign is the alignment O_DIRECT needs of buffers, file offsets
	// and lengths: the logical block size of any disk, 512 or 4096.
	directAlign = 4096
	// stageSize is how much a writer gathers before writing it to disk.
	// Direct writes of 1 MiB ran at 2.4 GB/s here, of 64 KiB at 0.5.
	stageSize = 1 << 20
	// stageBuffers is how many stageSize buffers a writer has: one being
	// filled, the others being written. With one write in flight a
	// datanode waited for the disk for 15-35 ms of each 64 MiB block of a
	// put at replication 1 that took ~80, with three 15-22 ms; seven made
	// such puts faster again in five of six alternating runs (0.54-0.70x
	// of cp+fsync against 0.35-0.62x), five about as much.
	stageBuffers = 8
)

var stagePool = sync.Pool{New: func() any {
	b := make([]byte, stageSize+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); r != 0 {
		skip = directAlign - r
	}
	b = b[skip : skip+stageSize : skip+stageSize]
	return &b
}}

// stage is the tail of a big replica being written that is not in its data
// file yet: the pieces in out, being written in the background (oldest
// first, each ending where the next starts), and buf, being filled, which
// holds the replica's bytes from off on. Everything before is in the data
// file. Only the replica's writer changes it; readers of the replica being
// written take a copy under mu.
type stage struct {
	f   *os.File // the data file opened again with O_DIRECT
	mu  sync.Mutex
	buf []byte
	off int64 // a multiple of directAlign
	out []piece
	mem [stageBuffers]*[]byte // buf is mem[cur], out the ones before it
	cur int
}

// piece is a stage's buffer being written at off.
type piece struct {
	buf     []byte
	off     int64
	written chan error
}

// startStage starts writing w's data through a stage from here on, if the
// volume's file system takes O_DIRECT. The data file's partial last
// directAlign block is read back into the stage, to be written again
// whole; writing it at once, padded, finds out whether direct writes work
// here (the padding is overwritten or cut off later).
func (w *replicaWriter) startStage() error {
	f, err := openDirect(w.data.Name())
	if refusesDirect(err) {
		w.v.noDirect.Store(true) // tmpfs and some others: page cache
		return nil
	}
	if err != nil {
		return fmt.Errorf("block %d: %w", w.id, err)
	}
	st := &stage{f: f}
	for i := range st.mem {
		st.mem[i] = stagePool.Get().(*[]byte)
	}
	st.buf = (*st.mem[0])[:0]
	if err := st.reload(w.data, w.length); err != nil {
		st.close()
		return fmt.Errorf("block %d: %w", w.id, err)
	}
	n := len(st.buf)
	clear(st.buf[n:directAlign])
	if err := st.writeAt(st.buf[:directAlign], st.off); err != nil {
		st.close()
		if refusesDirect(err) {
			w.v.noDirect.Store(true)
			return nil
		}
		return fmt.Errorf("block %d: %w", w.id, err) // a full disk, say
	}
	w.moving.Lock()
	w.stage = st
	w.moving.Unlock()
	return nil
}

// reload makes the stage start at the directAlign block holding length,
// reading the bytes before length from data.
func (st *stage) reload(data *os.File, length int64) error {
	off := length - length%directAlign
	st.mu.Lock()
	defer st.mu.Unlock()
	st.off = off
	st.buf = st.buf[:length-off]
	if _, err := data.ReadAt(st.buf, off); err != nil {
		return fmt.Errorf("read back data at %d: %w", off, err)
	}
	return nil
}

// add appends data; each stage that fills is written to disk in the
// background while the next fills.
func (st *stage) add(data []byte) error {
	for len(data) > 0 {
		n := copy(st.space(len(data)), data)
		if err := st.commit(n); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// space is where the stage's next bytes go, at most n of them: the free
// part of its buffer, for a packet's data to be read into (see commit).
func (st *stage) space(n int) []byte {
	return st.buf[len(st.buf):min(cap(st.buf), len(st.buf)+n)]
}

// commit takes n bytes put into space as the stage's next bytes, and
// writes the buffer out if that fills it.
func (st *stage) commit(n int) error {
	st.mu.Lock()
	st.buf = st.buf[:len(st.buf)+n]
	st.mu.Unlock()
	if len(st.buf) < cap(st.buf) {
		return nil
	}
	if len(st.out) == stageBuffers-1 {
		// The next buffer is the oldest being written.
		if err := st.waitOldest(); err != nil {
			return err
		}
	}
	p := piece{buf: st.buf, off: st.off, written: make(chan error, 1)}
	st.mu.Lock()
	st.out = append(st.out, p)
	st.off += int64(len(st.buf))
	st.cur = (st.cur + 1) % stageBuffers
	st.buf = (*st.mem[st.cur])[:0]
	st.mu.Unlock()
	go func() { p.written <- st.writeAt(p.buf, p.off) }()
	return nil
}

func (st *stage) writeAt(b []byte, off int64) error {
	if _, err := st.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write at %d: %w", off, err)
	}
	return nil
}

// waitOldest waits for the oldest piece being written.
func (st *stage) waitOldest() error {
	err := <-st.out[0].written
	st.mu.Lock()
	st.out = st.out[1:]
	st.mu.Unlock()
	return err
}

// wait waits for every piece being written; the error is the first one's.
func (st *stage) wait() error {
	var first error
	for len(st.out) > 0 {
		if err := st.waitOldest(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// flush writes what the stage holds of the replica's length bytes to disk
// and truncates the data file to length: the last directAlign block goes
// out whole, padded with zeros that the truncate then cuts off. Bytes past
// length (a packet that failed its checksums after it was read into the
// stage) are dropped.
func (st *stage) flush(data *os.File, length int64) error {
	if err := st.cut(data, length); err != nil {
		return err
	}
	n := len(st.buf)
	padded := (n + directAlign - 1) / directAlign * directAlign
	clear(st.buf[n:padded])
	if err := st.writeAt(st.buf[:padded], st.off); err != nil {
		return err
	}
	return data.Truncate(st.off + int64(n))
}

// cut shortens the replica to length (a rewind or a recovery), reading
// back from data what the stage no longer holds, and cuts the data file
// back to where the stage starts.
func (st *stage) cut(data *os.File, length int64) error {
	if err := st.wait(); err != nil {
		return err
	}
	if length >= st.off {
		st.mu.Lock()
		st.buf = st.buf[:length-st.off]
		st.mu.Unlock()
	} else if err := st.reload(data, length); err != nil {
		return err
	}
	return data.Truncate(st.off)
}

// tail copies what the stage holds of the replica's first length bytes,
// and where that starts, for a reader.
func (st *stage) tail(length int64) (int64, []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.buf == nil {
		return 0, nil // closed: everything is in the file
	}
	from := st.off
	if len(st.out) > 0 {
		from = st.out[0].off
	}
	var b []byte
	for _, p := range st.out {
		b = append(b, p.buf...)
	}
	b = append(b, st.buf...)
	return from, b[:max(0, min(int64(len(b)), length-from))]
}

// close lets go of the stage's file and buffers; again, it does nothing
// (a finish that fails after closing it aborts the replica).
func (st *stage) close() {
	st.wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.buf == nil {
		return
	}
	st.f.Close()
	for i, m := range st.mem {
		stagePool.Put(m)
		st.mem[i] = nil
	}
	st.buf = nil
}

// receive reads a packet's n bytes of data from r to where they are to be
// stored, checking them against their checksums (v) as they come: straight
// into the stage if the replica has one (in at most two pieces, the packet
// being at most one stage long; staged is then true and they are stored),
// else after head, in the room ReadPacketHead left. An error is
// io.ErrUnexpectedEOF, one wrapping protocol.ErrCorruption, or the disk's.
func (w *replicaWriter) receive(r io.Reader, head []byte, n int, v *xfer.Verifier) (pieces [][]byte, staged bool, err error) {
	if w.stage == nil || n > stageSize {
		data := head[len(head) : len(head)+n]
		if err := v.ReadFull(r, data); err != nil {
			return nil, false, err
		}
		return [][]byte{data}, false, nil
	}
	for n > 0 {
		sp := w.stage.space(n)
		if err := v.ReadFull(r, sp); err != nil {
			return nil, true, err
		}
		if err := w.stage.commit(len(sp)); err != nil {
			return nil, true, fmt.Errorf("write block %d: %w", w.id, err)
		}
		pieces = append(pieces, sp)
		n -= len(sp)
	}
	return pieces, true, nil
}

// refusesDirect reports whether err says the file system does not do
// O_DIRECT (as opposed to a full disk or a failing one).
func refusesDirect(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported)
}

// closeStage lets go of the stage, if any; w.stage stays set (a reader
// may be copying from it) but empty.
func (w *replicaWriter) closeStage() {
	if w.stage != nil {
		w.stage.close()
	}
}

package oplog

import (
	"fmt"
	"io"
	"os"

	"github.com/godfs/godfs/internal/datasync"
)

// pageWriter buffers a segment's records and writes them out in whole
// pages: the partial page at the end is written again by the next flush,
// its bytes past the records zeros. A write to part of a page that is not
// in the page cache makes the kernel read the page from the disk first,
// inside the write; on this VM the cache's cold pages (a segment's
// preallocated zeros, written seconds before) are taken away, and the op
// log then read a page every 2 ms of creates, each read in a sync's path.
// Rewriting a page's records that are already durable is safe: they are
// the same bytes, so a torn write of the page leaves them as they were.
type pageWriter struct {
	f     *os.File    // the segment; nil once the log is closed
	out   io.WriterAt // f; a test's recorder
	start int64       // the file offset of buf[0], a page boundary
	buf   []byte      // the end page's records already written, then the rest
	done  int         // how much of buf is written
}

// maxBuffered is how much is buffered before an add writes it out.
const maxBuffered = 256 << 10

// newPageWriter appends to f after its records end at end; the end
// page's records are read back (none in a new segment: no error).
func newPageWriter(f *os.File, end int64) (*pageWriter, error) {
	w := &pageWriter{f: f, out: f, start: end &^ (datasync.PageSize - 1), buf: make([]byte, 0, maxBuffered+datasync.PageSize)}
	if n := int(end - w.start); n > 0 {
		w.buf = w.buf[:n]
		if _, err := f.ReadAt(w.buf, w.start); err != nil {
			return nil, fmt.Errorf("read op log's last page: %w", err)
		}
		w.done = n
	}
	return w, nil
}

// end is the offset after the last record written out.
func (w *pageWriter) end() int64 { return w.start + int64(w.done) }

// Buffered is how many bytes are not written out yet.
func (w *pageWriter) Buffered() int { return len(w.buf) - w.done }

// add buffers one record's parts, first writing out what is buffered if
// that is maxBuffered already, as flush(zeroTo) does.
func (w *pageWriter) add(zeroTo int64, parts ...[]byte) error {
	if w.Buffered() >= maxBuffered {
		if err := w.flush(zeroTo); err != nil {
			return err
		}
	}
	for _, p := range parts {
		w.buf = append(w.buf, p...)
	}
	return nil
}

// flush writes out what is buffered, from the start of its first page to
// the end of its last, zeros after the records but not past zeroTo (how
// far the segment's blocks are written), and keeps the last partial page.
func (w *pageWriter) flush(zeroTo int64) error {
	if w.Buffered() == 0 {
		return nil
	}
	n := len(w.buf)
	pad := int(min(int64(-n&(datasync.PageSize-1)), max(zeroTo-w.start-int64(n), 0)))
	out := append(w.buf, zeroPage[:pad]...)
	if _, err := w.out.WriteAt(out, w.start); err != nil {
		return err
	}
	w.done = n
	if full := n &^ (datasync.PageSize - 1); full > 0 {
		w.start += int64(full)
		w.done = copy(w.buf, w.buf[full:n])
		w.buf = w.buf[:w.done]
	}
	return nil
}

var zeroPage [datasync.PageSize]byte

package master

import (
	"errors"
	"fmt"
	"time"

	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/oplog"
)

// startCheckpointLocked starts a checkpoint in the background when
// CheckpointEvery entries have been logged since the last one, none is
// being written and the pause after the last one is over. m.mu must be
// held.
func (m *Master) startCheckpointLocked(now time.Time) {
	last := m.mu.tree.LastIndex()
	if last-m.mu.checkpoint < m.cfg.CheckpointEvery || m.mu.checkpointing || now.Before(m.mu.nextCheckpoint) {
		return
	}
	if err := m.oplog.Roll(last + 1); err != nil {
		m.log.Error("checkpoint: roll op log", "err", err)
		return
	}
	m.mu.checkpointing = true
	m.ckpt.Add(1)
	go m.checkpointFromLog(last)
}

// checkpointFromLog writes the checkpoint at index idx, whose entries a
// Roll closed into older segments, from the last checkpoint and the log
// rather than from the live tree: that would hold the master's lock for
// the whole write (0.8 s at 2 million files, and growing with them). It
// costs a second copy of the namespace in memory while it runs. It is
// paced to a quarter of a core at most, in short bursts (see pacer): at
// full speed it took one of the two cores from clients for as long as it
// ran, and creates at half the master's top rate had a p99 of 30-50 ms
// (3.5-4 paced).
func (m *Master) checkpointFromLog(idx uint64) {
	defer m.ckpt.Done()
	start := time.Now()
	p := newPacer(checkpointShare, m.stop)
	err := func() error {
		tree, err := oplog.LoadCheckpoint(m.cfg.Dir, p.step)
		if err != nil {
			return err
		}
		if tree == nil {
			return errors.New("no checkpoint to start from")
		}
		err = m.oplog.ReplayClosed(tree.LastIndex(), idx, func(e *namespace.Entry) error {
			p.step()
			_, err := tree.Apply(e)
			return err
		})
		if err != nil {
			return err
		}
		if tree.LastIndex() != idx {
			return fmt.Errorf("op log replayed to entry %d, want %d", tree.LastIndex(), idx)
		}
		return m.writeCheckpoint(tree, p.step)
	}()
	took := time.Since(start)
	if err == nil {
		m.removeOldCheckpoint() // before checkpointing is cleared: one at a time
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.checkpointing = false
	m.mu.checkpointWork = p.worked
	if err != nil {
		m.mu.nextCheckpoint = m.cfg.Now().Add(took) // not in a loop of failures
		m.log.Error("checkpoint failed", "index", idx, "err", err)
		return
	}
	m.mu.checkpoint = max(m.mu.checkpoint, idx)
	m.log.Info("checkpoint written", "index", idx, "took", took.Round(time.Millisecond), "worked", p.worked.Round(time.Millisecond))
}

// removeOldCheckpoint frees the checkpoint the last one replaced, a step
// at a time, unless the master stops first.
func (m *Master) removeOldCheckpoint() {
	if err := oplog.RemoveOldCheckpoint(m.cfg.Dir, m.stop); err != nil {
		m.log.Warn("checkpoint", "err", err)
	}
}

// checkpointShare is the share of a core a background checkpoint takes
// at most.
const checkpointShare = 0.25

// pacer holds a background job to at most a share of one core. The job
// calls step often; once it has worked paceEvery since its last pause,
// step pauses: for as long as holds its work to its share of the time
// since it started, and never for less than minPause, so clients never
// wait behind it for longer than a burst. Once done is closed it no
// longer pauses (a shutdown waits for the job).
type pacer struct {
	share  float64
	done   <-chan struct{}
	start  time.Time
	since  time.Time     // the end of the last pause
	worked time.Duration // in all
	now    func() time.Time
	sleep  func(time.Duration, <-chan struct{})
}

func newPacer(share float64, done <-chan struct{}) *pacer {
	now := time.Now()
	return &pacer{share: share, done: done, start: now, since: now, now: time.Now, sleep: sleepUnless}
}

// A burst of paceEvery and a pause of at least minPause. On a VM whose
// kernel packs threads onto one vCPU, what waits is the op log's sync
// and the clients it wakes, whose thread yields and Gosched did not let
// run sooner, only a pause: during a background checkpoint of 1 million
// files a durable change every millisecond had a p99 of 1.5-1.7 ms with
// bursts of 1 ms, 0.7-1.1 with 100 µs (0.4 with no checkpoint running).
// The pauses are longer than asked (Go sleeps under a millisecond to its
// poller's next millisecond when nothing else wakes it), so they are
// counted from the clock: the job gets its share when it can, less when
// the pauses run long.
const (
	paceEvery = 100 * time.Microsecond
	minPause  = 50 * time.Microsecond
)

func (p *pacer) step() {
	now := p.now()
	w := now.Sub(p.since)
	if w < paceEvery {
		return
	}
	p.worked += w
	owed := p.start.Add(time.Duration(float64(p.worked) / p.share)).Sub(now)
	p.sleep(max(owed, minPause), p.done)
	p.since = p.now()
}

// sleepUnless sleeps for d or until done is closed.
func sleepUnless(d time.Duration, done <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	}
}

// checkpointLocked writes a checkpoint of the live tree and drops the log
// segments it covers, at a clean shutdown. m.mu must be held.
func (m *Master) checkpointLocked() error {
	idx := m.mu.tree.LastIndex()
	if idx == m.mu.checkpoint {
		return nil
	}
	start := time.Now()
	if err := m.oplog.Roll(idx + 1); err != nil {
		return err
	}
	if err := m.writeCheckpoint(m.mu.tree, nil); err != nil {
		return err
	}
	m.mu.checkpoint = idx
	m.log.Info("checkpoint written", "index", idx, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// writeCheckpoint saves tree as the checkpoint and drops the log segments
// it covers (a Roll to just after it must have closed them); pace as for
// oplog.SaveCheckpoint. On a full disk it gives back the log's free
// segments and tries once more: the segments it covers free more.
func (m *Master) writeCheckpoint(tree *namespace.Tree, pace func()) error {
	err := oplog.SaveCheckpoint(m.cfg.Dir, tree, pace)
	if oplog.OutOfSpace(err) {
		if n := m.oplog.DropFree(); n > 0 {
			m.log.Warn("checkpoint: disk full; removed the op log's free segments", "bytes", n)
			err = oplog.SaveCheckpoint(m.cfg.Dir, tree, pace)
		}
	}
	if err != nil {
		return err
	}
	return m.oplog.Compact(tree.LastIndex())
}

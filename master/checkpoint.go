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
// paced to a quarter of a core, a millisecond of work at a time: at full
// speed it took one of the two cores from clients for as long as it ran,
// and creates at half the master's top rate had a p99 of 30-50 ms (3.5-4
// paced).
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

// checkpointShare is the share of a core a background checkpoint takes.
const checkpointShare = 0.25

// pacer holds a background job to a share of one core. The job calls step
// often; once it has worked a millisecond since its last pause, step
// sleeps long enough to hold it to its share, so clients never lose a
// core to it for longer than that. Once done is closed it no longer sleeps (a
// shutdown waits for the job).
type pacer struct {
	share  float64
	done   <-chan struct{}
	since  time.Time     // the end of the last pause
	worked time.Duration // in all
	now    func() time.Time
	sleep  func(time.Duration, <-chan struct{})
}

func newPacer(share float64, done <-chan struct{}) *pacer {
	return &pacer{share: share, done: done, since: time.Now(), now: time.Now, sleep: sleepUnless}
}

const paceEvery = time.Millisecond

func (p *pacer) step() {
	w := p.now().Sub(p.since)
	if w < paceEvery {
		return
	}
	p.worked += w
	p.sleep(time.Duration(float64(w)*(1-p.share)/p.share), p.done)
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

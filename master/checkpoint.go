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
// costs a second copy of the namespace in memory while it runs; the next
// one waits three times as long as this one took, so that checkpoints
// take at most a quarter of a core.
func (m *Master) checkpointFromLog(idx uint64) {
	defer m.ckpt.Done()
	start := time.Now()
	err := func() error {
		tree, err := oplog.LoadCheckpoint(m.cfg.Dir)
		if err != nil {
			return err
		}
		if tree == nil {
			return errors.New("no checkpoint to start from")
		}
		err = m.oplog.ReplayClosed(tree.LastIndex(), idx, func(e *namespace.Entry) error {
			_, err := tree.Apply(e)
			return err
		})
		if err != nil {
			return err
		}
		if tree.LastIndex() != idx {
			return fmt.Errorf("op log replayed to entry %d, want %d", tree.LastIndex(), idx)
		}
		return m.writeCheckpoint(tree)
	}()
	took := time.Since(start)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.checkpointing = false
	m.mu.nextCheckpoint = m.cfg.Now().Add(3 * took)
	if err != nil {
		m.log.Error("checkpoint failed", "index", idx, "err", err)
		return
	}
	m.mu.checkpoint = max(m.mu.checkpoint, idx)
	m.log.Info("checkpoint written", "index", idx, "took", took.Round(time.Millisecond))
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
	if err := m.writeCheckpoint(m.mu.tree); err != nil {
		return err
	}
	m.mu.checkpoint = idx
	m.log.Info("checkpoint written", "index", idx, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// writeCheckpoint saves tree as the checkpoint and drops the log segments
// it covers (a Roll to just after it must have closed them).
func (m *Master) writeCheckpoint(tree *namespace.Tree) error {
	if err := oplog.SaveCheckpoint(m.cfg.Dir, tree); err != nil {
		return err
	}
	return m.oplog.Compact(tree.LastIndex())
}

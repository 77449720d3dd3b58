package master

import (
	"fmt"

	"github.com/godfs/godfs/master/namespace"
)

// Lease recovery closes a file whose writer is gone: after the soft limit
// when another client wants the file, after the hard limit on the master's
// own. The last block keeps the shortest length its live replicas
// reported (every replica holds at least that prefix): the datanodes cut
// their replicas to it under a new generation stamp, so a replica that
// missed the recovery is stale and deleted when it shows up. A new file
// then appears in the namespace with what its writer got through.

// recoverLeaseLocked closes the file under construction n. m.mu must be
// held.
func (m *Master) recoverLeaseLocked(n *namespace.Inode) error {
	now := m.nowMillis()
	path := n.Path()
	if last, ok := n.LastBlock(); ok && last.Len == 0 {
		bi := m.mu.blocks.blocks.Ptr(last.ID)
		lens := m.mu.blocks.lens[last.ID]
		length, ok := uint64(0), false
		if bi != nil {
			for _, dn := range m.mu.blocks.holders(last.ID) {
				if l, reported := lens[dn.uuid]; reported && (!ok || l < length) {
					length, ok = l, true
				}
			}
		}
		if !ok || length == 0 {
			// No replica got any of it: the block goes.
			if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpAbandonBlock, FileID: n.ID(), Client: n.Client(),
				Block: &namespace.Block{ID: last.ID}}); err != nil {
				return err
			}
		} else {
			// Every replica that holds at least the agreed length is cut to
			// it under a new generation stamp; the rest are stale.
			newGS := m.mu.tree.NextGenStamp()
			if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpReportBlock, FileID: n.ID(),
				Block: &namespace.Block{ID: last.ID, GenStamp: newGS, Len: length}}); err != nil {
				return err
			}
			old := last.GenStamp
			for _, dn := range m.mu.blocks.replicas(last.ID) {
				if l, reported := lens[dn.uuid]; !reported || l < length || dn.dead {
					m.mu.blocks.invalidateReplica(last.ID, dn.uuid)
				}
			}
			m.cutReplicasLocked(namespace.Block{ID: last.ID, GenStamp: newGS, Len: length}, old)
			delete(m.mu.blocks.lens, last.ID)
		}
	}
	_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpComplete, FileID: n.ID(), Client: n.Client(), Time: now})
	if err != nil {
		// The path was taken meanwhile (or its directory removed): drop it.
		m.log.Warn("lease recovery: cannot close the file; dropping it", "path", path, "err", err)
		_, err = m.applyLocked(&namespace.Entry{Type: namespace.OpAbandonFile, FileID: n.ID(), Time: now})
		return err
	}
	m.log.Info("lease recovered: file closed", "path", path, "length", n.Len())
	return nil
}

// takeOverLocked is called when a client wants a file another client is
// writing: past the soft limit the holder is presumed gone and the file is
// recovered at once. It reports whether the file was recovered. m.mu must
// be held.
func (m *Master) takeOverLocked(path string) (bool, error) {
	held := m.mu.tree.WritingAt(path)
	if held == nil {
		return false, nil
	}
	if m.cfg.Now().Sub(m.mu.leases[held.Client()]) <= m.cfg.LeaseSoftLimit {
		return false, nil
	}
	m.log.Info("lease soft limit passed; recovering for another writer", "path", path, "holder", held.Client())
	if err := m.recoverLeaseLocked(held); err != nil {
		return false, fmt.Errorf("recover lease of %s: %w", path, err)
	}
	return true, nil
}

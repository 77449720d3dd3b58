package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/godfs/godfs/master/namespace"
)

// reportedFractionLocked counts the blocks of complete files and those of
// them with at least one reported replica. Blocks of files being written
// do not count: the last one may never have reached a datanode before a
// crash, and lease recovery deals with it. m.mu must be held.
func (m *Master) reportedFractionLocked() (reported, total int) {
	bm := m.mu.blocks
	reported, total = bm.withReplicas, bm.blocks.Len()
	m.mu.tree.FilesUnderConstruction(func(n *namespace.Inode) {
		for i := range n.NumBlocks() {
			b := n.Block(i)
			if bi := bm.blocks.Ptr(b.ID); bi != nil {
				total--
				if bi.reps[0].node != 0 {
					reported--
				}
			}
		}
	})
	return reported, total
}

func (m *Master) safeModeStatusLocked() string {
	if !m.mu.safeMode {
		return "off"
	}
	if m.mu.safeModeManual {
		return "on (entered by an operator; leave with `godfs safemode leave`)"
	}
	r, t := m.reportedFractionLocked()
	return fmt.Sprintf("on: %d of %d blocks have reported replicas, waiting for %.1f%%", r, t, 100*m.cfg.SafeModeThreshold)
}

// checkSafeModeLocked leaves safe mode once enough blocks have reported
// replicas. m.mu must be held.
func (m *Master) checkSafeModeLocked() {
	if m.mu.safeModeManual {
		return
	}
	r, t := m.reportedFractionLocked()
	if t == 0 || float64(r)/float64(t) >= m.cfg.SafeModeThreshold {
		m.mu.safeMode = false
		m.log.Info("leaving safe mode", "reported", r, "blocks", t)
	}
}

const decommissionFile = "decommission.json"

func loadDecommission(dir string) (map[string]bool, error) {
	out := map[string]bool{}
	b, err := os.ReadFile(filepath.Join(dir, decommissionFile))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("master: %s is damaged: %w", decommissionFile, err)
	}
	for _, n := range list {
		out[n] = true
	}
	return out, nil
}

// saveDecommissionLocked persists the decommission list (durably: an
// operator's decision must survive a restart). m.mu must be held.
func (m *Master) saveDecommissionLocked() error {
	var list []string
	for n := range m.mu.decommission {
		list = append(list, n)
	}
	sort.Strings(list)
	b, _ := json.Marshal(list)
	return writeFileSync(filepath.Join(m.cfg.Dir, decommissionFile), b)
}

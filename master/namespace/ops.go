package namespace

import "fmt"

// OpType is the kind of a namespace change.
type OpType uint8

// The op types. Values are persisted in the op log: append, never renumber.
const (
	OpMkdir          OpType = 1  // Path, Perm, Owner, Group, Time, Parents
	OpCreate         OpType = 2  // Path, FileID, Perm, Owner, Group, Time, Replication, BlockSize, Client, Overwrite, Parents
	OpAddBlock       OpType = 3  // FileID, Block (new), Previous (length committed)
	OpAbandonBlock   OpType = 4  // FileID, Block
	OpComplete       OpType = 5  // FileID, Previous (last block's length), Time
	OpDelete         OpType = 6  // Path, Recursive
	OpRename         OpType = 7  // Path, Dst, Overwrite, Time
	OpSetPermission  OpType = 8  // Path, Perm
	OpSetOwner       OpType = 9  // Path, Owner, Group (empty = unchanged)
	OpSetReplication OpType = 10 // Path, Replication
	OpSetTimes       OpType = 11 // Path, Time (mtime), Atime; -1 = unchanged
	OpAbandonFile    OpType = 12 // FileID: drop a file under construction
	OpAppend         OpType = 13 // Path, Client, Time: reopen a file for writing
	OpTruncate       OpType = 14 // Path, Length, Time, Block.GenStamp (new stamp of a block cut in the middle)
	OpReportBlock    OpType = 15 // FileID, Block: the agreed length (and new generation stamp) of a block at lease recovery
	OpBumpGenStamp   OpType = 16 // Block.GenStamp: a generation stamp handed out for pipeline recovery
	OpUpdatePipeline OpType = 17 // FileID, Block: the block's new generation stamp after pipeline recovery
	OpFsync          OpType = 18 // FileID, Client, Block: hflush: the last block's visible length; a new file becomes visible
	// OpReserveBlockIDs: block ids below Length may be handed out before
	// their addBlock entries are durable; Block.ID, if set, is the least
	// id the next block gets (see Tree.ReservedBlockIDs).
	OpReserveBlockIDs OpType = 19
)

var opNames = map[OpType]string{
	OpMkdir: "mkdir", OpCreate: "create", OpAddBlock: "addBlock", OpAbandonBlock: "abandonBlock",
	OpComplete: "complete", OpDelete: "delete", OpRename: "rename", OpSetPermission: "setPermission",
	OpSetOwner: "setOwner", OpSetReplication: "setReplication", OpSetTimes: "setTimes",
	OpAbandonFile: "abandonFile", OpAppend: "append", OpTruncate: "truncate", OpReportBlock: "reportBlock", OpBumpGenStamp: "bumpGenStamp", OpUpdatePipeline: "updatePipeline", OpFsync: "fsync",
	OpReserveBlockIDs: "reserveBlockIDs",
}

func (t OpType) String() string {
	if n, ok := opNames[t]; ok {
		return n
	}
	return fmt.Sprintf("OpType(%d)", uint8(t))
}

// Block is one block of a file: its id, generation stamp and length.
type Block struct {
	ID       uint64 `json:"i"`
	GenStamp uint64 `json:"g"`
	Len      uint64 `json:"l,omitempty"`
}

// Entry is one namespace change as it is logged and applied. Every value
// Apply needs (times, ids) is in the entry, so applying the same entries to
// the same state always gives the same result.
type Entry struct {
	Index       uint64 `json:"n"`
	Type        OpType `json:"t"`
	Path        string `json:"p,omitempty"`
	Dst         string `json:"d,omitempty"`
	FileID      uint64 `json:"f,omitempty"`
	Block       *Block `json:"b,omitempty"`
	Previous    *Block `json:"pb,omitempty"`
	Perm        uint16 `json:"m,omitempty"`
	Owner       string `json:"o,omitempty"`
	Group       string `json:"gr,omitempty"`
	Time        int64  `json:"ti,omitempty"` // ms since the epoch
	Atime       int64  `json:"at,omitempty"`
	Replication uint16 `json:"r,omitempty"`
	BlockSize   uint64 `json:"bs,omitempty"`
	Length      uint64 `json:"len,omitempty"`
	Client      string `json:"c,omitempty"`
	Overwrite   bool   `json:"ow,omitempty"`
	Parents     bool   `json:"pa,omitempty"`
	Recursive   bool   `json:"rc,omitempty"`
}

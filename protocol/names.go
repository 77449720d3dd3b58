package protocol

// Hadoop RPC protocol names. Clients declare the first in their connection
// context and in every request header; datanodes use the second.
const (
	ClientProtocol   = "org.apache.hadoop.hdfs.protocol.ClientProtocol"
	DatanodeProtocol = "org.godfs.DatanodeProtocol"
	AdminProtocol    = "org.godfs.AdminProtocol"
	// ClientProtocolVersion is what Hadoop clients send in
	// RequestHeaderProto.clientProtocolVersion.
	ClientProtocolVersion = 1
)

// Data transfer constants shared by client and datanode.
const (
	// DataTransferVersion is the DataTransferProtocol version godfs speaks.
	DataTransferVersion = 28
	// BytesPerChecksum is the chunk size each CRC32C covers.
	BytesPerChecksum = 512
	// ChecksumSize is the size of one CRC32C on the wire and on disk.
	ChecksumSize = 4
	// MaxPacketData is the payload godfs's writers put in one packet:
	// 2016 chunks, so that a packet with its checksums and header stays
	// under 1 MiB. HDFS's clients send 64 KiB packets (any size up to
	// MaxPacketSize is accepted); with 1 MiB ones a put makes a sixteenth
	// of the system calls per byte at each hop: 1.3x the throughput at
	// replication 1 and 1.6x at replication 3 (go test -bench Put ./bench).
	MaxPacketData = 2016 * BytesPerChecksum
	// MaxPacketSize bounds the packets a reader accepts (HDFS allows 16 MiB).
	MaxPacketSize = 16 << 20
)

// Defaults the master hands out in getServerDefaults unless configured.
const (
	DefaultBlockSize   = 64 << 20
	DefaultReplication = 3
	DefaultMasterAddr  = "127.0.0.1:8020"
)

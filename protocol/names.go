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
	// MaxPacketData is the payload a writer puts in one packet: 126 chunks,
	// so that a packet with its checksums and header stays under 64 KiB as
	// in HDFS.
	MaxPacketData = 126 * BytesPerChecksum
	// MaxPacketSize bounds the packets a reader accepts (HDFS allows 16 MiB).
	MaxPacketSize = 16 << 20
)

// Defaults the master hands out in getServerDefaults unless configured.
const (
	DefaultBlockSize   = 64 << 20
	DefaultReplication = 3
	DefaultMasterAddr  = "127.0.0.1:8020"
)

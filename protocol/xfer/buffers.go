package xfer

import (
	"bufio"
	"io"
	"sync"

	"github.com/godfs/godfs/protocol"
)

// readBufferSize is smaller than a packet on purpose: bufio then reads a
// full packet's body straight into the caller's space, not through its
// buffer (one copy less per byte received). Data is written unbuffered,
// a packet per writev.
const readBufferSize = 16 << 10

// Connection buffers are pooled: a 4 KiB read would otherwise cost an
// allocation (and clearing it) at each end of each hop.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// packetSpace holds the copies of sent packets a pipeline keeps until
// they are acked: data and checksums of one packet in one slice.
var packetSpace = sync.Pool{New: func() any {
	b := make([]byte, maxPacketSpace)
	return &b
}}

// maxPacketSpace is the largest packet's data and checksums.
const maxPacketSpace = protocol.MaxPacketData + protocol.MaxPacketData/protocol.BytesPerChecksum*protocol.ChecksumSize

// Space is pooled room for one packet's data and checksums. A writer
// fills it and hands it to Pipeline.Send, which keeps it until the packet
// is acked as Write keeps a copy: the data is not copied again on its way
// to the socket.
type Space struct{ b *[]byte }

// NewSpace takes a Space from the pool.
func NewSpace() Space { return Space{packetSpace.Get().(*[]byte)} }

// Data is the room for a packet's data, protocol.MaxPacketData bytes.
func (s Space) Data() []byte {
	return (*s.b)[:protocol.MaxPacketData:protocol.MaxPacketData]
}

// Sums is empty room, after Data, for the checksums of a full packet's
// data: append them to it.
func (s Space) Sums() []byte {
	return (*s.b)[protocol.MaxPacketData:protocol.MaxPacketData:maxPacketSpace]
}

// Free gives back a Space that was not sent.
func (s Space) Free() { packetSpace.Put(s.b) }

// retain makes pk's data and checksums its own, copied into pooled space.
func (pk *Packet) retain(data, sums []byte) {
	n := len(data) + len(sums)
	var b []byte
	if n <= maxPacketSpace {
		pk.space = packetSpace.Get().(*[]byte)
		b = (*pk.space)[:n]
	} else {
		b = make([]byte, n)
	}
	copy(b, data)
	copy(b[len(data):], sums)
	pk.Data, pk.Sums = b[:len(data):len(data)], b[len(data):]
}

// release gives back pk's pooled space once nothing refers to it.
func (pk *Packet) release() {
	if pk.space != nil {
		packetSpace.Put(pk.space)
		pk.space, pk.Data, pk.Sums = nil, nil, nil
	}
}

// packetBuffers hold packets as they are read (ReadPacket's raw), with
// room for one of ReadPacketData: a 4 KiB read would otherwise allocate
// one.
var packetBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, MaxPacketHead+ReadPacketData+ReadPacketData/protocol.BytesPerChecksum*protocol.ChecksumSize)
	return &b
}}

const (
	// ReadPacketData is the data a packet of a read carries, as godfs's
	// and HDFS's datanodes send them (128 chunks).
	ReadPacketData = 128 * protocol.BytesPerChecksum
	// MaxPacketHead bounds a packet's framing (6 bytes) and header (27:
	// PacketHeaderProto's fields are fixed-length).
	MaxPacketHead = 40
)

// NewPacketBuffer returns pooled room to read packets into (pass
// (*b)[:0] to ReadPacket); give it back with FreePacketBuffer once
// nothing refers to what was read into it.
func NewPacketBuffer() *[]byte { return packetBuffers.Get().(*[]byte) }

// FreePacketBuffer returns b to the pool.
func FreePacketBuffer(b *[]byte) { packetBuffers.Put(b) }

// NewReader returns a pooled buffered reader of r; give it back with
// FreeReader once nothing reads from it.
func NewReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// FreeReader returns br to the pool.
func FreeReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// Package protoenc marshals and parses the protocol's messages. The wire
// types in protocol/pb carry, beside protoc-gen-go's code, methods that
// protoc-gen-go-vtproto generates: the same encoding without the protobuf
// library's reflection, which was a fifth of a small RPC's CPU. Messages
// without them (none of protocol/pb's) take the library's path, so callers
// need not care which they have.
package protoenc

import (
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// vtMessage is what protoc-gen-go-vtproto generates.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// Size is the length of m's encoding.
func Size(m proto.Message) int {
	if vm, ok := m.(vtMessage); ok {
		return vm.SizeVT()
	}
	return proto.Size(m)
}

// Append appends m's encoding to b.
func Append(b []byte, m proto.Message) ([]byte, error) {
	if vm, ok := m.(vtMessage); ok {
		return appendVT(b, vm, vm.SizeVT())
	}
	return proto.MarshalOptions{}.MarshalAppend(b, m)
}

// AppendDelimited appends m's encoding prefixed by its length as a varint,
// as Hadoop's writeDelimitedTo does.
func AppendDelimited(b []byte, m proto.Message) ([]byte, error) {
	if vm, ok := m.(vtMessage); ok {
		n := vm.SizeVT()
		return appendVT(protowire.AppendVarint(b, uint64(n)), vm, n)
	}
	b = protowire.AppendVarint(b, uint64(proto.Size(m)))
	// Size just cached every message's size: marshalling reuses it.
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
}

// appendVT appends vm's n bytes (vtproto writes a message back to front
// into a buffer of exactly its size).
func appendVT(b []byte, vm vtMessage, n int) ([]byte, error) {
	b = slices.Grow(b, n)
	if _, err := vm.MarshalToSizedBufferVT(b[len(b) : len(b)+n]); err != nil {
		return nil, err
	}
	return b[:len(b)+n], nil
}

// Unmarshal parses b into m, replacing what m held, as proto.Unmarshal
// does: a required field that is missing is an error. On well-formed input
// the two agree. On some malformed input the generated parser is the more
// lenient, and gives a message the sender could have sent well-formed: a
// ten-byte varint with bits past 64 loses them (as in Hadoop's Java
// code), an unknown group may end on another field's end tag, and a
// packed list's last varint may run past the list's length.
func Unmarshal(b []byte, m proto.Message) error {
	if vm, ok := m.(vtMessage); ok {
		proto.Reset(m) // UnmarshalVT merges into what is there
		return vm.UnmarshalVT(b)
	}
	return proto.Unmarshal(b, m)
}

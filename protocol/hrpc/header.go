package hrpc

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/godfs/godfs/protocol/pb"
)

// Every call carries two headers and every answer one. They are read here
// field by field, without the protobuf library's reflection or an
// allocation a field: on a small call, decoding them cost more than the
// request itself. What they decode to is checked against proto.Unmarshal
// in the tests.

// callHeader is what the server uses of an RpcRequestHeaderProto.
type callHeader struct {
	callID   int32
	op       pb.RpcRequestHeaderProto_OperationProto
	clientID []byte // aliases the frame
}

// methodHeader is a RequestHeaderProto; its fields alias the frame.
type methodHeader struct {
	method, protocol []byte
}

// answerHeader is what the client uses of an RpcResponseHeaderProto.
type answerHeader struct {
	callID     uint32
	status     pb.RpcResponseHeaderProto_RpcStatusProto
	class, msg string
}

var errBadHeader = errors.New("hrpc: malformed header")

// fields calls fn for each field of the protobuf message in b, with its
// value as a number (varints) or bytes (length-delimited); other wire types
// are skipped.
func fields(b []byte, fn func(num protowire.Number, v uint64, bs []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errBadHeader, protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadHeader, num, protowire.ParseError(n))
			}
			fn(num, v, nil)
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadHeader, num, protowire.ParseError(n))
			}
			fn(num, 0, v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadHeader, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// delimitedFields is fields over the message delimited at the start of
// buf; it returns what follows the message.
func delimitedFields(buf []byte, fn func(num protowire.Number, v uint64, bs []byte)) ([]byte, error) {
	b, rest, err := nextDelimited(buf)
	if err != nil {
		return nil, err
	}
	return rest, fields(b, fn)
}

// Field numbers, as in common.proto.
const (
	reqRpcOp    = 2
	reqCallID   = 3
	reqClientID = 4

	methodName     = 1
	methodProtocol = 2

	respCallID = 1
	respStatus = 2
	respClass  = 4
	respMsg    = 5
)

// parseCallHeader reads the RpcRequestHeaderProto delimited at the start of
// frame and returns the rest.
func parseCallHeader(frame []byte) (h callHeader, rest []byte, err error) {
	var sawID, sawClient bool
	rest, err = delimitedFields(frame, func(num protowire.Number, v uint64, bs []byte) {
		switch num {
		case reqRpcOp:
			h.op = pb.RpcRequestHeaderProto_OperationProto(int32(v))
		case reqCallID:
			h.callID, sawID = int32(protowire.DecodeZigZag(v&0xffffffff)), true
		case reqClientID:
			h.clientID, sawClient = bs, true
		}
	})
	if err == nil && (!sawID || !sawClient) {
		err = fmt.Errorf("%w: call header without a call id or client id", errBadHeader)
	}
	return h, rest, err
}

// parseMethodHeader reads the RequestHeaderProto delimited at the start of
// body and returns the rest.
func parseMethodHeader(body []byte) (h methodHeader, rest []byte, err error) {
	var sawName bool
	rest, err = delimitedFields(body, func(num protowire.Number, v uint64, bs []byte) {
		switch num {
		case methodName:
			h.method, sawName = bs, true
		case methodProtocol:
			h.protocol = bs
		}
	})
	if err == nil && !sawName {
		err = fmt.Errorf("%w: request header without a method name", errBadHeader)
	}
	return h, rest, err
}

// parseAnswerHeader reads the RpcResponseHeaderProto delimited at the
// start of frame and returns the rest.
func parseAnswerHeader(frame []byte) (h answerHeader, rest []byte, err error) {
	var sawID, sawStatus bool
	rest, err = delimitedFields(frame, func(num protowire.Number, v uint64, bs []byte) {
		switch num {
		case respCallID:
			h.callID, sawID = uint32(v), true
		case respStatus:
			h.status, sawStatus = pb.RpcResponseHeaderProto_RpcStatusProto(int32(v)), true
		case respClass:
			h.class = string(bs)
		case respMsg:
			h.msg = string(bs)
		}
	})
	if err == nil && (!sawID || !sawStatus) {
		err = fmt.Errorf("%w: answer header without a call id or status", errBadHeader)
	}
	return h, rest, err
}

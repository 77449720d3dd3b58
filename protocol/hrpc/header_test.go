package hrpc

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol/pb"
)

// delimited marshals m, appends extra (fields godfs's .proto does not
// declare, as Hadoop's clients send: trace info, caller context, state id)
// and delimits the result.
func delimited(t *testing.T, m proto.Message, extra []byte) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m) // missing required fields are tested too
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, extra...)
	return append(protowire.AppendVarint(nil, uint64(len(b))), b...)
}

// unknownFields are fields 6 (a message), 8 (an int64) and 9 (bytes) of an
// RpcRequestHeaderProto, and a fixed64 and fixed32 for good measure.
var unknownFields = func() []byte {
	var b []byte
	b = protowire.AppendTag(b, 6, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x0a, 0x02, 'h', 'i'})
	b = protowire.AppendTag(b, 8, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<40)
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("state"))
	b = protowire.AppendTag(b, 20, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	b = protowire.AppendTag(b, 21, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, 7)
}()

func TestHeadersParseAsProtobufDoes(t *testing.T) {
	rest := []byte("rest")
	for _, callID := range []int32{0, 1, 1 << 30, 0x7fffffff, callIDConnectionContext, callIDPing} {
		for _, extra := range [][]byte{nil, unknownFields} {
			want := &pb.RpcRequestHeaderProto{RpcKind: pb.RpcKindProto_RPC_PROTOCOL_BUFFER.Enum(),
				RpcOp: pb.RpcRequestHeaderProto_RPC_CLOSE_CONNECTION.Enum(), CallId: proto.Int32(callID),
				ClientId: []byte("0123456789abcdef"), RetryCount: proto.Int32(-1)}
			h, r, err := parseCallHeader(append(delimited(t, want, extra), rest...))
			if err != nil || h.callID != want.GetCallId() || h.op != want.GetRpcOp() || string(h.clientID) != string(want.GetClientId()) || string(r) != "rest" {
				t.Fatalf("call header %v: got %+v %q %v", want, h, r, err)
			}

			mh := &pb.RequestHeaderProto{MethodName: proto.String("getFileInfo"),
				DeclaringClassProtocolName: proto.String("org.apache.hadoop.hdfs.protocol.ClientProtocol"), ClientProtocolVersion: proto.Uint64(1)}
			m, r, err := parseMethodHeader(append(delimited(t, mh, extra), rest...))
			if err != nil || string(m.method) != mh.GetMethodName() || string(m.protocol) != mh.GetDeclaringClassProtocolName() || string(r) != "rest" {
				t.Fatalf("method header %v: got %+v %q %v", mh, m, r, err)
			}

			ah := &pb.RpcResponseHeaderProto{CallId: proto.Uint32(uint32(callID)), Status: pb.RpcResponseHeaderProto_ERROR.Enum(),
				ServerIpcVersionNum: proto.Uint32(Version), ExceptionClassName: proto.String("java.io.FileNotFoundException"),
				ErrorMsg: proto.String("no /x"), ErrorDetail: pb.RpcResponseHeaderProto_ERROR_APPLICATION.Enum(), ClientId: []byte("c")}
			a, r, err := parseAnswerHeader(append(delimited(t, ah, extra), rest...))
			if err != nil || a.callID != ah.GetCallId() || a.status != ah.GetStatus() || a.class != ah.GetExceptionClassName() || a.msg != ah.GetErrorMsg() || string(r) != "rest" {
				t.Fatalf("answer header %v: got %+v %q %v", ah, a, r, err)
			}
		}
	}
}

func TestHeadersRefuseWhatProtobufRefuses(t *testing.T) {
	// Required fields missing.
	if _, _, err := parseCallHeader(delimited(t, &pb.RpcRequestHeaderProto{ClientId: []byte("c")}, nil)); !errors.Is(err, errBadHeader) {
		t.Errorf("call header without a call id: %v", err)
	}
	if _, _, err := parseCallHeader(delimited(t, &pb.RpcRequestHeaderProto{CallId: proto.Int32(1)}, nil)); !errors.Is(err, errBadHeader) {
		t.Errorf("call header without a client id: %v", err)
	}
	if _, _, err := parseMethodHeader(delimited(t, &pb.RequestHeaderProto{DeclaringClassProtocolName: proto.String("p")}, nil)); !errors.Is(err, errBadHeader) {
		t.Errorf("method header without a method: %v", err)
	}
	if _, _, err := parseAnswerHeader(delimited(t, &pb.RpcResponseHeaderProto{Status: pb.RpcResponseHeaderProto_SUCCESS.Enum()}, nil)); !errors.Is(err, errBadHeader) {
		t.Errorf("answer header without a call id: %v", err)
	}
	// Cut anywhere inside: an error, never a panic or a header.
	full := delimited(t, &pb.RpcRequestHeaderProto{CallId: proto.Int32(5), ClientId: []byte("0123456789abcdef")}, unknownFields)
	for i := range full {
		if _, _, err := parseCallHeader(full[:i]); err == nil {
			t.Errorf("call header cut at %d of %d parsed", i, len(full))
		}
	}
	// A length that says more than the message holds, inside the frame.
	bad := []byte{3, byte(protowire.EncodeTag(reqClientID, protowire.BytesType)), 9, 'x'}
	if _, _, err := parseCallHeader(bad); !errors.Is(err, errBadHeader) {
		t.Errorf("client id longer than its header: %v", err)
	}
}

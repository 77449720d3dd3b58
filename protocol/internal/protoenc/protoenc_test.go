package protoenc

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/godfs/godfs/protocol/pb"
)

var rounds = flag.Int("protoenc.rounds", 10, "encodings of each message type to damage")

// wireTypes is every message type of the protocol, the generated code's
// and the library's paths compared on each.
func wireTypes(t *testing.T) []protoreflect.MessageType {
	var mts []protoreflect.MessageType
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if strings.HasPrefix(string(mt.Descriptor().FullName()), "godfs.hadoop.") {
			mts = append(mts, mt)
		}
		return true
	})
	if len(mts) < 100 {
		t.Fatalf("%d message types registered, want the protocol's (over 100)", len(mts))
	}
	return mts
}

// fill sets m's required fields and, at random, its others: scalars,
// enums, nested messages up to depth 3, lists, and now and then an
// unknown field.
func fill(r *rand.Rand, m protoreflect.Message, depth int) {
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if fd.Cardinality() != protoreflect.Required && r.IntN(10) < 3 {
			continue
		}
		switch {
		case fd.IsMap():
			continue // the protocol has none
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range r.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth < 3 {
						e := l.NewElement()
						fill(r, e.Message(), depth+1)
						l.Append(e)
					}
				} else {
					l.Append(scalar(r, fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if depth < 3 || fd.Cardinality() == protoreflect.Required {
				fill(r, m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, scalar(r, fd))
		}
	}
	if r.IntN(8) == 0 {
		u := protowire.AppendTag(nil, 15000+protowire.Number(r.IntN(100)), protowire.VarintType)
		m.SetUnknown(protowire.AppendVarint(u, r.Uint64()))
	}
}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.EnumKind:
		vs := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vs.Get(r.IntN(vs.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(r.Uint32()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(r.Uint64()) >> r.IntN(64))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(r.Uint32())
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(r.Uint64() >> r.IntN(64))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(r.Float32())
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(r.NormFloat64())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strings.Repeat("/dir/f", r.IntN(4)))
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic("unhandled kind " + fd.Kind().String())
}

// TestSameBytesAsTheLibrary: for every message type of the protocol, the
// generated marshalling gives the bytes proto.Marshal gives, and parsing
// them back gives an equal message, either way.
func TestSameBytesAsTheLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, mt := range wireTypes(t) {
		if _, ok := mt.New().Interface().(vtMessage); !ok {
			t.Errorf("%s has no generated marshalling: regenerate protocol/pb", mt.Descriptor().FullName())
			continue
		}
		for range 20 {
			m := mt.New()
			fill(r, m, 0)
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
			if err != nil {
				t.Fatalf("%s: library marshal: %v", mt.Descriptor().FullName(), err)
			}
			got, err := Append([]byte("x"), m.Interface())
			if err != nil || !bytes.Equal(got[1:], want) || got[0] != 'x' || Size(m.Interface()) != len(want) {
				t.Fatalf("%s: Append gave %x, %v (Size %d); the library %x", mt.Descriptor().FullName(), got, err, Size(m.Interface()), want)
			}
			d, err := AppendDelimited(nil, m.Interface())
			if n, l := protowire.ConsumeVarint(d); err != nil || l < 0 || int(n) != len(want) || !bytes.Equal(d[l:], want) {
				t.Fatalf("%s: AppendDelimited gave %x, %v", mt.Descriptor().FullName(), d, err)
			}
			back := mt.New().Interface()
			fill(r, back.ProtoReflect(), 0) // Unmarshal must replace what was there
			if err := Unmarshal(want, back); err != nil || !proto.Equal(back, m.Interface()) {
				t.Fatalf("%s: Unmarshal: %v, got %v, want %v", mt.Descriptor().FullName(), err, back, m)
			}
		}
	}
}

// TestClones: the generated CloneVT, which godfs calls where it copies a
// message (a datanode's info, a block, the op a datanode passes down the
// pipeline), gives what proto.Clone gives, unknown fields included, and a
// copy: clearing the clone leaves the original whole.
func TestClones(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, mt := range wireTypes(t) {
		for range 5 {
			m := mt.New()
			fill(r, m, 0)
			c, ok := m.Interface().(interface{ CloneMessageVT() proto.Message })
			if !ok {
				t.Fatalf("%s has no CloneVT: regenerate protocol/pb", mt.Descriptor().FullName())
			}
			before, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
			clone := c.CloneMessageVT()
			if !proto.Equal(clone, proto.Clone(m.Interface())) {
				t.Fatalf("%s: CloneVT gave %v, proto.Clone %v", mt.Descriptor().FullName(), clone, m)
			}
			clearAll(clone.ProtoReflect())
			after, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
			if !bytes.Equal(before, after) {
				t.Fatalf("%s: clearing the clone changed the original", mt.Descriptor().FullName())
			}
		}
	}
}

// clearAll empties m's lists, bytes and nested messages in place, and then
// m itself.
func clearAll(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := range v.List().Len() {
				clearAll(v.List().Get(i).Message())
			}
			v.List().Truncate(0)
		case fd.IsList():
			v.List().Truncate(0)
		case fd.Kind() == protoreflect.MessageKind:
			clearAll(v.Message())
		case fd.Kind() == protoreflect.BytesKind:
			clear(v.Bytes())
		}
		return true
	})
	if u := m.GetUnknown(); len(u) > 0 {
		clear(u)
	}
}

// TestDamagedEncodings: cut and damaged encodings of every message type.
// A cut-off encoding is refused by both parsers or by neither (a missing
// required field included), and parsed alike. A damaged one never makes
// the generated parser panic; what it parses is a whole message, which
// marshals and parses back the same; and where both parsers take it, they
// agree. Only the library refuses some (see Unmarshal).
func TestDamagedEncodings(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, mt := range wireTypes(t) {
		name := mt.Descriptor().FullName()
		for range *rounds {
			m := mt.New()
			fill(r, m, 0)
			b, err := proto.Marshal(m.Interface())
			if err != nil {
				t.Fatal(err)
			}
			for range 10 {
				cut := b[:r.IntN(len(b)+1)]
				ours, lib := mt.New().Interface(), mt.New().Interface()
				errOurs, errLib := Unmarshal(cut, ours), proto.Unmarshal(cut, lib)
				if (errOurs == nil) != (errLib == nil) || errOurs == nil && !proto.Equal(ours, lib) {
					t.Fatalf("%s, %x cut from %x: generated %v (%v), library %v (%v)", name, cut, b, errOurs, ours, errLib, lib)
				}
				if len(b) == 0 {
					continue
				}
				bad := bytes.Clone(b)
				bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
				ours, lib = mt.New().Interface(), mt.New().Interface()
				if Unmarshal(bad, ours) != nil {
					continue
				}
				again := mt.New().Interface()
				if re, err := Append(nil, ours); err != nil || Unmarshal(re, again) != nil || !proto.Equal(again, ours) {
					t.Fatalf("%s, %x: parsed %v, which does not marshal and parse back (%v)", name, bad, ours, err)
				}
				if proto.Unmarshal(bad, lib) == nil && !sameFields(ours, lib) {
					t.Fatalf("%s, %x: generated code parsed %v, library %v", name, bad, ours, lib)
				}
			}
		}
	}
}

// sameFields is proto.Equal, but for the tags of unknown fields: the
// library writes them again in their shortest form, the generated code
// keeps them as they came.
func sameFields(a, b proto.Message) bool {
	a, b = proto.Clone(a), proto.Clone(b)
	shortTags(a.ProtoReflect())
	shortTags(b.ProtoReflect())
	return proto.Equal(a, b)
}

func shortTags(m protoreflect.Message) {
	var out []byte
	for u := m.GetUnknown(); len(u) > 0; {
		num, typ, n := protowire.ConsumeTag(u)
		if n < 0 {
			return // left as it is: the library would not have taken it
		}
		l := protowire.ConsumeFieldValue(num, typ, u[n:])
		if l < 0 {
			return
		}
		out = append(protowire.AppendTag(out, num, typ), u[n:n+l]...)
		u = u[n+l:]
	}
	if len(out) > 0 {
		m.SetUnknown(out)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := range v.List().Len() {
				shortTags(v.List().Get(i).Message())
			}
		case !fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			shortTags(v.Message())
		}
		return true
	})
}

// TestRequiredFields: a missing required field fails both ways, as the
// library's Marshal and Unmarshal do.
func TestRequiredFields(t *testing.T) {
	h := &pb.RpcRequestHeaderProto{CallId: proto.Int32(1)} // clientId is required
	if _, err := Append(nil, h); err == nil {
		t.Fatal("marshalled a header without its required clientId")
	}
	b := protowire.AppendTag(nil, 3, protowire.VarintType) // callId alone
	b = protowire.AppendVarint(b, 7)
	if err := Unmarshal(b, &pb.RpcRequestHeaderProto{}); err == nil {
		t.Fatal("parsed a header without its required clientId")
	}
}

package namespace

import (
	"errors"
	"reflect"
	"testing"
)

// fullEntry is an entry with every field set, each to a value of its own,
// filled by reflection so that a field added to Entry is covered too.
func fullEntry(t *testing.T) Entry {
	t.Helper()
	var e Entry
	v := reflect.ValueOf(&e).Elem()
	for i := 0; i < v.NumField(); i++ {
		f, n := v.Field(i), uint64(i+1)*1000+7
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + "/é\x00")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Uint8:
			f.SetUint(n % 250)
		case reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(n)
		case reflect.Int64:
			f.SetInt(-int64(n))
		case reflect.Pointer:
			f.Set(reflect.ValueOf(&Block{ID: n, GenStamp: n + 1, Len: n + 2}))
		default:
			t.Fatalf("Entry.%s: a %s, which the test (and the binary form) do not know", v.Type().Field(i).Name, f.Kind())
		}
	}
	return e
}

func TestEntryBinaryRoundTrip(t *testing.T) {
	full := fullEntry(t)
	cases := []Entry{full, {Index: 1, Type: OpMkdir, Path: "/"}, {Index: 1 << 63, Type: OpSetTimes, Time: -1, Atime: -1},
		{Index: 2, Type: OpAddBlock, Block: &Block{}}} // a zero block is not a missing one
	// And every field alone, so two fields sharing a tag would show.
	v := reflect.ValueOf(full)
	for i := 0; i < v.NumField(); i++ {
		var e Entry
		reflect.ValueOf(&e).Elem().Field(i).Set(v.Field(i))
		cases = append(cases, e)
	}
	for _, e := range cases {
		b, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got Entry
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%+v: %v", e, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
		if idx, ok := BinaryEntryIndex(b); e.Index != 0 && (!ok || idx != e.Index) {
			t.Fatalf("%+v: BinaryEntryIndex %d %v", e, idx, ok)
		}
	}
	if _, ok := BinaryEntryIndex([]byte(`{"Index":7}`)); ok {
		t.Fatal("BinaryEntryIndex took JSON for a binary entry")
	}
}

func TestEntryBinaryRefusesBadInput(t *testing.T) {
	e := fullEntry(t)
	b, _ := e.AppendBinary(nil)
	for _, bad := range [][]byte{
		nil,
		[]byte(`{"n":1}`),
		{entryFormat, 99},                     // unknown field
		{entryFormat, tagPerm, 0x80, 0x80, 4}, // 65536: above a uint16
		{entryFormat, tagType, 0x80, 0x02},    // 256: above an OpType
		{entryFormat, tagPath, 5, 'a'},        // string longer than the rest
		{entryFormat, tagBlock, 1, 2},         // block cut short
		{entryFormat, tagIndex, 0xff},         // varint cut short
	} {
		var got Entry
		if err := got.UnmarshalBinary(bad); !errors.Is(err, errBadEntry) {
			t.Errorf("%q: err %v, want errBadEntry", bad, err)
		}
	}
	// Cut anywhere, a valid form never panics (the record's checksum is
	// what catches a cut).
	for i := range b {
		var got Entry
		got.UnmarshalBinary(b[:i])
	}
}

func FuzzEntryBinary(f *testing.F) {
	e := Entry{Index: 7, Type: OpCreate, Path: "/a/b", FileID: 16386, Perm: 0o644, Owner: "u", Group: "g",
		Time: 1700000000000, Replication: 3, BlockSize: 128 << 20, Client: "c", Overwrite: true, Parents: true}
	b, _ := e.AppendBinary(nil)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Entry
		if got.UnmarshalBinary(b) != nil {
			return
		}
		again, _ := got.AppendBinary(nil)
		var back Entry
		if err := back.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("%q decoded to %+v, which does not round-trip: %+v %v", b, got, back, err)
		}
	})
}

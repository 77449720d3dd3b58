package hrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
)

const testProtocol = "test.Protocol"

// startServer serves getFileInfo: "/slow" answers after a pause (so calls
// overtake it), "/missing" fails with fs.ErrNotExist, anything else echoes
// the path and the caller's user in the owner field.
func startServer(t testing.TB) string {
	t.Helper()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Register(testProtocol, map[string]Method{
		"getFileInfo": Handle(func() *pb.GetFileInfoRequestProto { return &pb.GetFileInfoRequestProto{} },
			func(ctx context.Context, req *pb.GetFileInfoRequestProto) (*pb.GetFileInfoResponseProto, error) {
				switch req.GetSrc() {
				case "/slow":
					time.Sleep(200 * time.Millisecond)
				case "/missing":
					return nil, &fs.PathError{Op: "stat", Path: "/missing", Err: fs.ErrNotExist}
				case "/panic":
					panic("boom")
				}
				return &pb.GetFileInfoResponseProto{Fs: &pb.HdfsFileStatusProto{
					FileType: pb.HdfsFileStatusProto_IS_FILE.Enum(), Path: []byte(req.GetSrc()), Length: proto.Uint64(1),
					Permission: &pb.FsPermissionProto{Perm: proto.Uint32(0o644)}, Owner: proto.String(CallerFrom(ctx).User),
					Group: proto.String("g"), ModificationTime: proto.Uint64(0), AccessTime: proto.Uint64(0)}}, nil
			}),
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

func stat(c *Client, p string) (*pb.GetFileInfoResponseProto, error) {
	resp := &pb.GetFileInfoResponseProto{}
	err := c.Call(context.Background(), "getFileInfo", &pb.GetFileInfoRequestProto{Src: proto.String(p)}, resp)
	return resp, err
}

func TestCallsAnsweredOutOfOrder(t *testing.T) {
	addr := startServer(t)
	c := NewClient(addr, ClientOptions{Protocol: testProtocol, User: "alice"})
	defer c.Close()
	slowDone := make(chan time.Time, 1)
	go func() {
		stat(c, "/slow")
		slowDone <- time.Now()
	}()
	time.Sleep(20 * time.Millisecond)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := fmt.Sprintf("/f%d", i)
			resp, err := stat(c, p)
			if err != nil || string(resp.GetFs().GetPath()) != p || resp.GetFs().GetOwner() != "alice" {
				t.Errorf("stat %s: %v %v", p, resp, err)
			}
		}(i)
	}
	wg.Wait()
	fastDone := time.Now()
	if slow := <-slowDone; !slow.After(fastDone) {
		t.Fatal("fast calls waited for the slow one: responses are not out of order")
	}
}

// The client reads answers into pooled buffers, reused once an answer is
// parsed: what a call returned stays as it was after later calls.
func TestAnswersOutliveTheirFrames(t *testing.T) {
	addr := startServer(t)
	c := NewClient(addr, ClientOptions{Protocol: testProtocol, User: "alice"})
	defer c.Close()
	var answers []*pb.GetFileInfoResponseProto
	for i := range 200 {
		resp, err := stat(c, fmt.Sprintf("/%03d-%s", i, strings.Repeat("x", i)))
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, resp)
	}
	for i, resp := range answers {
		if want := fmt.Sprintf("/%03d-%s", i, strings.Repeat("x", i)); string(resp.GetFs().GetPath()) != want ||
			resp.GetFs().GetOwner() != "alice" || resp.GetFs().GetGroup() != "g" {
			t.Fatalf("answer %d after 200 calls: path %q, owner %q, group %q; want %q, alice, g",
				i, resp.GetFs().GetPath(), resp.GetFs().GetOwner(), resp.GetFs().GetGroup(), want)
		}
	}
}

func TestErrorsCarryExceptionClass(t *testing.T) {
	addr := startServer(t)
	c := NewClient(addr, ClientOptions{Protocol: testProtocol})
	defer c.Close()
	_, err := stat(c, "/missing")
	var re *RemoteError
	if !errors.As(err, &re) || re.Class != "java.io.FileNotFoundException" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error: %v (%T)", err, err)
	}
	// A panicking handler fails its call, not the server.
	if _, err := stat(c, "/panic"); err == nil {
		t.Fatal("panic in a handler did not fail the call")
	}
	// An unknown method is a clear error and the connection stays usable.
	err = c.Call(context.Background(), "frobnicate", &pb.GetFileInfoRequestProto{Src: proto.String("/")}, &pb.GetFileInfoResponseProto{})
	if !errors.As(err, &re) || re.Class != "org.apache.hadoop.ipc.RpcNoSuchMethodException" {
		t.Fatalf("unknown method: %v", err)
	}
	if _, err := stat(c, "/ok"); err != nil {
		t.Fatalf("after errors: %v", err)
	}
}

func TestClientReconnects(t *testing.T) {
	addr := startServer(t)
	c := NewClient(addr, ClientOptions{Protocol: testProtocol})
	defer c.Close()
	if _, err := stat(c, "/a"); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.mu.cc.c.Close() // the connection breaks under the client
	c.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	if _, err := stat(c, "/b"); err != nil {
		t.Fatalf("call after the connection broke: %v", err)
	}
}

func TestExceptionTableRoundTrips(t *testing.T) {
	for _, err := range []error{fs.ErrNotExist, fs.ErrExist, protocol.ErrNotEmpty, protocol.ErrNotDir, protocol.ErrLeaseHeld} {
		class := protocol.ExceptionClass(fmt.Errorf("wrapped: %w", err))
		if !errors.Is(&RemoteError{Class: class}, err) {
			t.Errorf("%v -> %s does not map back", err, class)
		}
	}
}

// A call given up on (its context ended) must not leave its answer, when
// it comes, to a later call.
func TestCancelledCallsLeaveNoAnswerBehind(t *testing.T) {
	addr := startServer(t)
	c := NewClient(addr, ClientOptions{Protocol: testProtocol})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := c.Call(ctx, "getFileInfo", &pb.GetFileInfoRequestProto{Src: proto.String("/slow")}, &pb.GetFileInfoResponseProto{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow call: %v", err)
	}
	// The slow answer comes 200 ms after it was asked for.
	for i, end := 0, time.Now().Add(400*time.Millisecond); time.Now().Before(end); i++ {
		p := fmt.Sprintf("/after%d", i)
		resp, err := stat(c, p)
		if err != nil || string(resp.GetFs().GetPath()) != p {
			t.Fatalf("stat %s after a cancelled call: %v %v", p, resp, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkCall measures one small call and its answer over loopback
// through the real client and server (allocations included: -benchmem).
func BenchmarkCall(b *testing.B) {
	addr := startServer(b)
	c := NewClient(addr, ClientOptions{Protocol: testProtocol})
	defer c.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := stat(c, "/f"); err != nil {
			b.Fatal(err)
		}
	}
}

// One connection's calls run concurrently, on at most MaxCallsPerConn
// workers; more wait for a free one, and all are answered.
func TestCallsPerConnectionBounded(t *testing.T) {
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	var mu sync.Mutex
	running, most := 0, 0
	s.Register(testProtocol, map[string]Method{
		"getFileInfo": Handle(func() *pb.GetFileInfoRequestProto { return &pb.GetFileInfoRequestProto{} },
			func(ctx context.Context, req *pb.GetFileInfoRequestProto) (*pb.GetFileInfoResponseProto, error) {
				mu.Lock()
				running++
				most = max(most, running)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				mu.Lock()
				running--
				mu.Unlock()
				return &pb.GetFileInfoResponseProto{}, nil
			}),
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	defer s.Close()
	c := NewClient(l.Addr().String(), ClientOptions{Protocol: testProtocol, User: "alice"})
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 3 * MaxCallsPerConn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := stat(c, fmt.Sprintf("/f%d", i)); err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if most > MaxCallsPerConn || most < 2 {
		t.Fatalf("%d calls ran at once on one connection, want 2 to %d", most, MaxCallsPerConn)
	}
}

package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// budgetPair runs a yamux session over loopback TCP: the server's side
// (the agent's, in mirrord) kept to a Budget of limit bytes with 256 KiB
// windows, the client's watching for its resets (WatchResets, whose ids
// go to watched).
func budgetPair(t *testing.T, limit int64) (client, server *yamux.Session, b *Budget, resets chan uint32) {
	client, server, b, resets, _ = budgetPairWatched(t, limit)
	return client, server, b, resets
}

func budgetPairWatched(t *testing.T, limit int64) (client, server *yamux.Session, b *Budget, resets, watched chan uint32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	resets = make(chan uint32, 100)
	b = NewBudget(limit, func(id uint32, held int64) { resets <- id })
	if server, err = yamux.Server(b.Conn(sc), cfg); err != nil {
		t.Fatal(err)
	}
	b.Attach(server)
	watched = make(chan uint32, 100)
	if client, err = yamux.Client(WatchResets(cc, func(id uint32) { watched <- id }), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server, b, resets, watched
}

// tcpPair returns both ends of a loopback TCP connection: out, which a
// relay writes to, and in, a sink that reads only when the test does.
func tcpPair(t *testing.T) (out, in net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if out, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if in, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close(); in.Close() })
	return out, in
}

// Streams whose reader stalls fill their windows; past the budget the
// fullest are reset on both ends, until what is held fits again. A
// stream that flows meanwhile keeps every byte, in order, and the session
// serves new streams after.
func TestBudgetResetsTheFullest(t *testing.T) {
	const limit = 1 << 20
	client, server, b, resets, watched := budgetPairWatched(t, limit)

	// The flowing stream: 16 MiB, read as it comes, checked at the end.
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	flow, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	go func() { flow.Write(want); flow.Close() }()
	sflow, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(b.Stream(sflow)); got <- b }()

	// Eight stalled streams: 512 KiB each on their way, never read.
	const stalled = 8
	var wg sync.WaitGroup
	writeErrs := make(chan error, stalled)
	var held []*Stream
	for range stalled {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.Write(make([]byte, 512<<10))
			writeErrs <- err
		}()
		sst, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, b.Stream(sst))
	}

	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("the flowing stream got %d bytes (sha %x), want %d (sha %x)", len(g), sha256.Sum256(g), len(want), sha256.Sum256(want))
	}
	// Each stalled stream holds its window, 256 KiB: eight are twice the
	// budget, so at least four are reset.
	deadline := time.After(10 * time.Second)
	var reset []uint32
	for len(reset) < 4 {
		select {
		case id := <-resets:
			reset = append(reset, id)
		case <-deadline:
			t.Fatalf("%d streams reset, want at least 4; held %d", len(reset), b.Held())
		}
	}
	time.Sleep(200 * time.Millisecond)
	if h := b.Held(); h > limit {
		t.Errorf("held %d bytes after the resets, want at most %d", h, limit)
	}
	// Reset streams fail on both ends: the writer's write, and this
	// side's read, without waiting for anything more from the peer.
	resetErrs := 0
	for range reset {
		select {
		case err := <-writeErrs:
			if !errors.Is(err, yamux.ErrConnectionReset) {
				t.Errorf("a reset stream's writer got %v, want %v", err, yamux.ErrConnectionReset)
			}
			resetErrs++
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d reset streams' writers returned", resetErrs, len(reset))
		}
	}
	for _, st := range held {
		for _, id := range reset {
			if st.StreamID() != id {
				continue
			}
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(st); !errors.Is(err, yamux.ErrConnectionReset) {
				t.Errorf("stream %d, reset: this side's read got %v, want %v", id, err, yamux.ErrConnectionReset)
			}
		}
	}
	// The client's side was told which (mirrord says so).
	for range reset {
		select {
		case id := <-watched:
			if !slices.Contains(reset, id) {
				t.Errorf("the client was told of a reset of stream %d, which was not reset", id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the client was not told of every reset")
		}
	}
	// yamux forgot them (they no longer count against a session's limit).
	if n := server.NumStreams(); n > stalled-len(reset)+1 {
		t.Errorf("server has %d streams open, want at most %d", n, stalled-len(reset)+1)
	}
	// The session goes on.
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("ping"))
	sst, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(b.Stream(sst), buf); err != nil || string(buf) != "ping" {
		t.Fatalf("a new stream after the resets: %q, %v", buf, err)
	}
	client.Close()
	wg.Wait()
}

// A relay blocked writing to a connection that never reads holds the
// stream's bytes: the reset aborts that connection too (its reader sees
// ECONNRESET) and the relay returns.
func TestBudgetAbortsTheRelay(t *testing.T) {
	client, server, b, resets := budgetPair(t, 256<<10)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	clientErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if _, err := st.Write(buf); err != nil {
				clientErr <- err
				return
			}
		}
	}()
	sst, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	out, in := tcpPair(t)
	// The sink's receive buffer is small, so that the relay blocks soon.
	in.(*net.TCPConn).SetReadBuffer(4096)
	done := make(chan struct{})
	go func() { Splice(b.Stream(sst), out); close(done) }()
	select {
	case <-resets:
	case <-time.After(20 * time.Second):
		t.Fatalf("no reset; held %d", b.Held())
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay still runs after its stream was reset")
	}
	select {
	case err := <-clientErr:
		if !errors.Is(err, yamux.ErrConnectionReset) {
			t.Errorf("the stream's writer got %v, want %v", err, yamux.ErrConnectionReset)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's writer still writes after the reset")
	}
	in.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, in); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the sink read %v, want ECONNRESET", err)
	}
}

// Copy passes a stream's reset on as a reset: the connection it writes
// to is aborted, not closed.
func TestCopyPassesAResetOn(t *testing.T) {
	client, server, b, _, watched := budgetPairWatched(t, 0)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("x"))
	sst, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	out, in := tcpPair(t)
	go Copy(out, st)
	b.Stream(sst).Abort()
	in.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, in); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the program's side read %v, want ECONNRESET", err)
	}
	// Not the budget's reset: mirrord says nothing of it.
	select {
	case id := <-watched:
		t.Errorf("the client was told stream %d was reset over the budget", id)
	default:
	}
}

// When the session ends, a relay still blocked writing to a destination
// that never reads is aborted (after sessionEndGrace), so that the agent
// does not hold its connection and buffers for good.
func TestBudgetSessionEndAbortsStalledRelays(t *testing.T) {
	client, server, b, _ := budgetPair(t, 0)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	go st.Write(make([]byte, 8<<20))
	sst, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	out, in := tcpPair(t)
	done := make(chan struct{})
	go func() { Splice(b.Stream(sst), out); close(done) }()
	time.Sleep(200 * time.Millisecond) // the relay blocks on the sink
	client.Close()
	select {
	case <-done:
	case <-time.After(sessionEndGrace + 5*time.Second):
		t.Fatal("the relay still runs after its session ended")
	}
	in.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, in); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the sink read %v, want ECONNRESET", err)
	}
}

// The stream reset is one that holds much and moved least lately: never
// a small one, never a busy one while an idle one holds as much.
func TestBudgetVictim(t *testing.T) {
	now := time.Now()
	idle := func(held int64, away time.Duration) *account {
		return &account{held: held, consumed: now.Add(-away), window: now.Add(-away)}
	}
	busy := func(held int64, away time.Duration) *account {
		a := idle(held, away)
		a.took(1<<20, now.Add(-away))
		return a
	}
	for _, tc := range []struct {
		name    string
		streams map[uint32]*account
		want    uint32
	}{
		{"the biggest", map[uint32]*account{1: idle(100, time.Second), 3: idle(900, time.Second), 5: idle(300, time.Second)}, 3},
		{"idle before busy", map[uint32]*account{1: busy(900, time.Millisecond), 3: idle(600, time.Millisecond)}, 3},
		{"small never", map[uint32]*account{1: busy(900, 0), 3: idle(100, time.Hour)}, 1},
		{"away longest among equals", map[uint32]*account{1: idle(500, time.Second), 3: idle(500, time.Minute)}, 3},
		{"busy long ago is idle", map[uint32]*account{1: busy(500, 3*time.Second), 3: busy(500, time.Millisecond)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(1, nil)
			b.streams = tc.streams
			for _, a := range tc.streams {
				b.total += a.held
			}
			if got := b.victimLocked(); got != tc.want {
				t.Errorf("victim %d, want %d", got, tc.want)
			}
		})
	}
}

// chunkConn returns what it holds in reads of random sizes.
type chunkConn struct {
	net.Conn
	b   []byte
	rnd *rand.Rand
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.b), 1+c.rnd.IntN(3000))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// Frames made up for yamux's reader come whole, between the peer's
// frames, however the connection's reads cut them; the peer's frames
// come unchanged.
func TestFrameConnInjectsBetweenFrames(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	frame := func(typ byte, id uint32, body []byte) []byte {
		h := make([]byte, yamuxHeaderSize, yamuxHeaderSize+len(body))
		h[1] = typ
		binary.BigEndian.PutUint32(h[4:], id)
		binary.BigEndian.PutUint32(h[8:], uint32(len(body)))
		if typ != yamuxTypeData {
			binary.BigEndian.PutUint32(h[8:], 1234)
			return h
		}
		return append(h, body...)
	}
	var want [][]byte
	var wire []byte
	for i := range 500 {
		var f []byte
		if rnd.IntN(3) == 0 {
			f = frame(yamuxTypeWindowUpdate, uint32(i), nil)
		} else {
			body := make([]byte, rnd.IntN(5000))
			for j := range body {
				body[j] = byte(i + j)
			}
			f = frame(yamuxTypeData, uint32(i), body)
		}
		want = append(want, f)
		wire = append(wire, f...)
	}
	b := NewBudget(0, nil)
	c := b.Conn(&chunkConn{b: wire, rnd: rnd}).(*frameConn)
	injected := frame(yamuxTypeWindowUpdate, 99999, nil)
	binary.BigEndian.PutUint16(injected[2:], yamuxFlagRST)
	var out []byte
	buf := make([]byte, 4096)
	injects := 0
	var at []int // where the output was at each injection
	for {
		c.imu.Lock()
		idle := len(c.in) == 0
		c.imu.Unlock()
		if idle && rnd.IntN(20) == 0 {
			c.injectIn(injected)
			at = append(at, len(out))
			injects++
		}
		n, err := c.Read(buf[:1+rnd.IntN(len(buf)-1)])
		out = append(out, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Hand over what is still waiting (injections after the last frame).
	for {
		n, _ := c.Read(buf)
		if n == 0 {
			break
		}
		out = append(out, buf[:n]...)
	}
	got, seen, pos := 0, 0, 0
	for len(out) > 0 {
		if len(out) < yamuxHeaderSize {
			t.Fatalf("%d bytes left, less than a header", len(out))
		}
		f := out[:yamuxHeaderSize]
		if out[1] == yamuxTypeData {
			f = out[:yamuxHeaderSize+int(binary.BigEndian.Uint32(out[8:]))]
		}
		out = out[len(f):]
		pos += len(f)
		if bytes.Equal(f, injected) {
			// Handed over once the frame being read is: no later.
			if gap := pos - len(f) - at[seen]; gap > yamuxHeaderSize+5000 {
				t.Errorf("injection %d came %d bytes after it was made, more than a frame", seen, gap)
			}
			seen++
			continue
		}
		if got >= len(want) || !bytes.Equal(f, want[got]) {
			t.Fatalf("frame %d differs from the peer's", got)
		}
		got++
	}
	if got != len(want) || seen != injects {
		t.Errorf("%d of %d frames, %d of %d injected", got, len(want), seen, injects)
	}
}

// Streams that end as usual (both sides close, or one resets) leave no
// account behind, and nothing counted.
func TestBudgetForgetsEndedStreams(t *testing.T) {
	client, server, b, _ := budgetPair(t, 64<<20)
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				s := b.Stream(st)
				io.Copy(s, s) // echo until the client's half-close
				s.Close()
			}()
		}
	}()
	for i := range 100 {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte{byte(i)}, 100_000)
		go func() { st.Write(msg); st.Close() }()
		got, err := io.ReadAll(st)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("stream %d echoed %d bytes, %v", i, len(got), err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n, held := len(b.streams), b.total
		b.mu.Unlock()
		if n == 0 && held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d accounts and %d bytes left after every stream ended", n, held)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package protocol

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/mirrord-go/mirrord/httpfilter"
)

var samples = []Message{
	&Hello{Version: Version, Client: "mirrord test"},
	&HelloReply{Version: Version, Agent: "agent", Hostname: "pod-1", Resolver: Resolver{Servers: []string{"10.0.0.10"}, Search: []string{"ns.svc.cluster.local"}, Ndots: 5}},
	&ErrorReply{Message: "connection refused", Code: "ECONNREFUSED"},
	&EnvRequest{},
	&EnvReply{Env: map[string]string{"A": "1", "EMPTY": ""}},
	&DNSRequest{Query: []byte{0, 1, 2, 255}},
	&DNSReply{Answer: []byte{9, 8}},
	&DialRequest{Addr: "10.0.0.2:8080"},
	&DialRequest{Network: NetworkUnix, Addr: "/var/run/app.sock"},
	&DialReply{LocalAddr: "10.0.0.1:40000", RemoteAddr: "10.0.0.2:8080"},
	&DialReply{RemoteAddr: "/var/run/app.sock"},
	&UDPOpen{Network: "udp4"},
	&UDPOpenReply{LocalAddr: "10.0.0.1:5000"},
	&Datagram{Addr: "[fd00::1]:53", Data: []byte("hello")},
	&Subscribe{Port: 8080, Mode: "steal"},
	&Subscribe{Port: 80, Mode: "steal", Filter: &httpfilter.Spec{AnyOf: []httpfilter.Spec{{Header: "^x-user: a$"}, {Path: "^/api"}}}},
	&SubscribeReply{},
	&Incoming{Port: 80, Source: "10.0.0.9:51000", Dest: "10.0.0.5:80", Mirror: true},
	&FileRequest{Op: FileOpen, Path: "/etc/app.conf", Flags: 0, Perm: 0o644},
	&FileReply{Info: &FileInfo{Mode: 0o100644, Size: 12, Ino: 7}, Entries: []DirEntry{{Name: "a", Mode: 0o40000, Ino: 3}}},
	&FileRead{Off: 4096, Len: 65536},
	&FileData{Data: []byte("abc"), EOF: true},
	&FileWrite{Off: 1, Data: []byte("x")},
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	for _, m := range samples {
		if err := Write(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range samples {
		got, err := Read(&buf)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip: got %#v, want %#v", got, want)
		}
	}
	if _, err := Read(&buf); err != io.EOF {
		t.Errorf("Read at end = %v, want io.EOF", err)
	}
}

func TestMalformed(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
	}{
		{"short header", []byte{0, 0}},
		{"zero length", []byte{0, 0, 0, 0, 1}},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 1}},
		{"unknown type", []byte{0, 0, 0, 3, 200, '{', '}'}},
		{"bad json", []byte{0, 0, 0, 3, byte(TypeHello), '{', '['}},
		{"wrong field type", append([]byte{0, 0, 0, 16, byte(TypeHello)}, []byte(`{"version":"x"}`)...)},
		{"length mismatch", []byte{0, 0, 0, 9, byte(TypeEnvRequest), '{', '}'}},
	}
	for _, tt := range tests {
		if _, err := Decode(tt.frame); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: Decode error = %v, want ErrFrame", tt.name, err)
		}
	}
	if _, err := Read(bytes.NewReader([]byte{0, 0, 0, 10, 1})); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated body: %v", err)
	}
}

func TestReadReply(t *testing.T) {
	var buf bytes.Buffer
	Write(&buf, &ErrorReply{Message: "no", Code: "ENOENT"})
	Write(&buf, &EnvReply{})
	Write(&buf, &DialReply{})
	if _, err := ReadReply[*EnvReply](&buf); err == nil || err.Error() != "no (ENOENT)" {
		t.Errorf("error reply: %v", err)
	}
	if _, err := ReadReply[*EnvReply](&buf); err != nil {
		t.Errorf("env reply: %v", err)
	}
	if _, err := ReadReply[*EnvReply](&buf); !errors.Is(err, ErrFrame) {
		t.Errorf("unexpected reply type: %v", err)
	}
}

func TestCheckVersion(t *testing.T) {
	if err := CheckVersion(Version, "agent"); err != nil {
		t.Error(err)
	}
	if err := CheckVersion(Version+1, "the agent"); err == nil {
		t.Error("mismatch not detected")
	}
}

// FuzzDecode: any input gives a message or an error, never a panic, and a
// decoded message encodes back into a frame that decodes to the same
// encoding. (Not to an equal message: an empty list that omitempty leaves
// out, such as "all_of":[], comes back nil.)
func FuzzDecode(f *testing.F) {
	for _, m := range samples {
		b, _ := Encode(m)
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("re-encode %T: %v", m, err)
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("decode of re-encoded %T: %v", m, err)
		}
		if third, _ := Encode(m2); !bytes.Equal(third, again) {
			t.Fatalf("unstable round trip: %T encodes as %q, then as %q", m, again, third)
		}
	})
}

// FuzzRead: a stream of frames from the peer, read one message at a time
// as both ends do (Read, and ReadReply for an expected type), gives
// messages or an error, never a panic; each message read re-encodes into
// a frame that reads back as the same encoding.
func FuzzRead(f *testing.F) {
	var all bytes.Buffer
	for _, m := range samples {
		Write(&all, m)
	}
	f.Add(all.Bytes())
	f.Add([]byte{0, 0, 0, 3, byte(TypeFileData), 1, 0})
	f.Add([]byte{0, 0, 0, 9, byte(TypeFileWrite), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{0, 0, 0, 12, byte(TypeSubscribe)}, `{"port":-1}`...))
	f.Add(append([]byte{0, 0, 0, 25, byte(TypeError)}, `{"message":"\ud800","x":1}`...))
	f.Add(append([]byte{0, 0x40, 0, 1, byte(TypeFileData)}, make([]byte, 16)...)) // a length at the limit, cut short
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			m, err := Read(r)
			if err != nil {
				break
			}
			frame, err := Encode(m)
			if err != nil {
				t.Fatalf("re-encode %T: %v", m, err)
			}
			m2, err := Read(bytes.NewReader(frame))
			if err != nil {
				t.Fatalf("read of re-encoded %T: %v", m, err)
			}
			if again, _ := Encode(m2); !bytes.Equal(again, frame) {
				t.Fatalf("%T encodes as %q, then as %q", m, frame, again)
			}
		}
		ReadReply[*HelloReply](bytes.NewReader(b))
		ReadReply[*Incoming](bytes.NewReader(b))
		ReadReply[*FileData](bytes.NewReader(b))
	})
}

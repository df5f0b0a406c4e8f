package protocol

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/httpfilter"
)

// Version is the protocol version. Both ends must have the same.
const Version = 2

// MaxFrame bounds one frame, so that a corrupt length cannot make a reader
// allocate gigabytes.
const MaxFrame = 4 << 20

// Type identifies a message.
type Type uint8

const (
	TypeHello Type = iota + 1
	TypeHelloReply
	TypeError
	TypeEnvRequest
	TypeEnvReply
	TypeDNSRequest
	TypeDNSReply
	TypeDialRequest
	TypeDialReply
	TypeUDPOpen
	TypeUDPOpenReply
	TypeDatagram
	TypeSubscribe
	TypeSubscribeReply
	TypeIncoming
	TypeFileRequest
	TypeFileReply
	TypeFileRead
	TypeFileData
	TypeFileWrite
	TypeBye
	TypeByeReply
	typeEnd
)

// Message is any protocol message.
type Message interface{ Type() Type }

// Hello opens a session.
type Hello struct {
	Version int    `json:"version"`
	Client  string `json:"client"` // e.g. "mirrord 0.1.0"
	// Token is the session secret the agent was started with, if any.
	Token string `json:"token,omitempty"`
	// ReconnectSeconds asks the agent to keep running that long for this
	// client when its connection drops without a Bye: the client is then
	// trying to get back (agent.reconnect_timeout).
	ReconnectSeconds uint32 `json:"reconnect_seconds,omitempty"`
	// Session identifies the client across its reconnections, so that
	// the agent stops waiting for it when it is back.
	Session string `json:"session,omitempty"`
}

// Bye says that the client ends its session on purpose: the agent need not
// wait for it to come back. The agent answers with a ByeReply.
type Bye struct{}

// ByeReply acknowledges a Bye.
type ByeReply struct{}

// HelloReply describes the agent and its target.
type HelloReply struct {
	Version    int      `json:"version"`
	Agent      string   `json:"agent"`
	Targetless bool     `json:"targetless"`
	Hostname   string   `json:"hostname"`
	Resolver   Resolver `json:"resolver"`
	// MaxConnections is how many streams the session may have open at
	// once (0: no limit said); past it the agent refuses with ENOBUFS.
	MaxConnections int `json:"max_connections,omitempty"`
	// MaxSessionBytes is the bytes the agent holds for the session at
	// most (0: not said); past it the agent resets the connections that
	// hold the most (relay.Budget).
	MaxSessionBytes int64 `json:"max_session_bytes,omitempty"`
}

// OverBudget is what mirrord says when the agent reset connections of the
// session to keep it within MaxSessionBytes.
func OverBudget(limit int64) string {
	return fmt.Sprintf("the agent reset a connection of the program (ECONNRESET): this session held more than %d MiB in the agent, its limit — bytes sent that the destination does not take, or answers the program does not read; the connections holding the most are reset", limit>>20)
}

// SessionFull is the message of the agent's refusal (ENOBUFS) of a
// stream past a session's MaxConnections.
func SessionFull(limit int) string {
	return fmt.Sprintf("this mirrord session already has %d connections open through the agent, its limit; close some, or run fewer at once", limit)
}

// Resolver is the target's DNS configuration (from its /etc/resolv.conf):
// the local side writes the same search domains and ndots into the
// sandbox's resolv.conf so names expand as they would in the pod.
type Resolver struct {
	Servers []string `json:"servers"`
	Search  []string `json:"search"`
	Ndots   int      `json:"ndots"`
}

// ErrorReply answers a request that failed.
type ErrorReply struct {
	Message string `json:"message"`
	// Code is a syscall-style error name where one applies
	// ("ECONNREFUSED", "ENETUNREACH", "ETIMEDOUT", ...), so that the
	// local side can give the program the same error the pod would see.
	Code string `json:"code,omitempty"`
}

func (e *ErrorReply) Error() string {
	if e.Code != "" {
		return e.Message + " (" + e.Code + ")"
	}
	return e.Message
}

// EnvRequest asks for the target's environment.
type EnvRequest struct{}

// EnvReply is the target's whole environment; filtering is the local side's job.
type EnvReply struct {
	Env map[string]string `json:"env"`
}

// DNSRequest is one DNS query in wire format, answered with the target's
// resolvers from inside its network namespace.
type DNSRequest struct {
	Query []byte `json:"query"`
}

// DNSReply is the answer in wire format.
type DNSReply struct {
	Answer []byte `json:"answer"`
}

// DialRequest opens a stream connection from the target. After a
// DialReply the stream carries the connection's bytes.
type DialRequest struct {
	// Network is "tcp" (or empty: what an older client sends) for Addr
	// ip:port dialed from the target's network namespace, or "unix" for
	// Addr an absolute path of a unix stream socket in the target's file
	// system (feature.network.outgoing.unix_streams). An agent before
	// "unix" fails such a dial: it takes the path for a TCP address.
	Network string `json:"network,omitempty"`
	Addr    string `json:"addr"`
}

// Networks of a DialRequest.
const (
	NetworkTCP  = "tcp"
	NetworkUnix = "unix"
)

// DialReply reports the connection's addresses as the target sees them
// (for a unix socket, RemoteAddr is the path and LocalAddr is empty: the
// agent's end has no name).
type DialReply struct {
	LocalAddr  string `json:"local_addr"`
	RemoteAddr string `json:"remote_addr"`
}

// UDPOpen opens a UDP socket in the target. After a UDPOpenReply the
// stream carries Datagram frames both ways.
type UDPOpen struct {
	Network string `json:"network"` // "udp4" or "udp6"
}

// UDPOpenReply reports the socket's local address in the target.
type UDPOpenReply struct {
	LocalAddr string `json:"local_addr"`
}

// Datagram is one UDP datagram: to Addr when sent by the local side, from
// Addr when sent by the agent.
type Datagram struct {
	Addr string `json:"addr"`
	Data []byte `json:"data"`
}

// Subscribe asks the agent to deliver the target's incoming TCP
// connections to Port. The subscription lasts as long as the stream.
type Subscribe struct {
	Port uint16 `json:"port"`
	Mode string `json:"mode"` // "mirror" or "steal"
	// Filter, with steal, takes only the HTTP requests that match; the
	// others go on to the target's own app.
	Filter *httpfilter.Spec `json:"filter,omitempty"`
	// Override, with steal, takes the port from sessions that have it
	// whole (on_concurrent_steal "override"); they get no more of it.
	Override bool `json:"override,omitempty"`
	// Flush, with steal, ends the connections to Port that are already
	// established when the steal starts (agent.flush_connections): their
	// peers reconnect, and the new connections are stolen. Without it
	// they stay with the target's app until they close.
	Flush bool `json:"flush,omitempty"`
	// HTTPProbes says the target's kubelet probes Port with HTTP GETs.
	// An unfiltered steal of it then still passes the probes (requests
	// whose User-Agent starts with "kube-probe/") to the target's app,
	// so the pod stays ready and alive; the rest is stolen.
	HTTPProbes bool `json:"http_probes,omitempty"`
	// TLS, with a filtered steal, says that Port serves TLS: the agent
	// ends TLS itself with the target's certificate and key, filters the
	// requests inside, and re-encrypts the others to the target's app.
	// An agent from before this field ignores it, and its reply then
	// lacks TLS: the client must not go on as if TLS were ended.
	TLS *TLSPort `json:"tls,omitempty"`
}

// TLSPort is where the agent finds what it needs to end TLS on a port:
// paths inside the target's file system (resolved in the target's root,
// as file requests are), of PEM files. A file may hold other entries
// too (a key next to its certificate chain): they are skipped.
type TLSPort struct {
	// CertPEM holds the certificate chain the target's app serves, its
	// end-entity certificate first; KeyPEM its private key.
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
	// ClientCertPEM and ClientKeyPEM, when set, are the certificate
	// chain and key the agent presents to the target's app when it
	// re-encrypts the requests that stay with it (an app that asks for
	// client certificates); without them the agent connects anonymously.
	ClientCertPEM string `json:"client_cert_pem,omitempty"`
	ClientKeyPEM  string `json:"client_key_pem,omitempty"`
}

// SubscribeReply confirms a subscription.
type SubscribeReply struct {
	// TLS confirms that the agent ends TLS on the port (Subscribe.TLS).
	TLS bool `json:"tls,omitempty"`
}

// Incoming starts a stream the agent opens to the client for one incoming
// connection. After it, the stream carries the connection's bytes: both
// ways when stolen; only the client's bytes (a copy) when mirrored.
type Incoming struct {
	Port   uint16 `json:"port"`
	Source string `json:"source"` // the remote peer, ip:port
	// Dest is where the peer connected (the target's address and port,
	// as SO_ORIGINAL_DST reports it): what `mirrord dump` shows. An agent
	// before this field leaves it empty.
	Dest   string `json:"dest,omitempty"`
	Mirror bool   `json:"mirror"`
	// TLS is set when the peer's connection was TLS that the agent ended
	// (Subscribe.TLS): the stream carries the requests in the clear, and
	// the local side delivers them per https_delivery.
	TLS *IncomingTLS `json:"tls,omitempty"`
}

// IncomingTLS describes the TLS connection a stolen request came on.
type IncomingTLS struct {
	// ServerName is the name the peer asked for (SNI), if any.
	ServerName string `json:"server_name,omitempty"`
	// ALPN is the protocol the stream carries: "h2" (HTTP/2 frames, with
	// the connection preface) or "http/1.1".
	ALPN string `json:"alpn"`
}

// FileOp names a file operation.
type FileOp string

const (
	FileStat     FileOp = "stat"     // Path; Follow says whether a final symlink is followed
	FileReadDir  FileOp = "readdir"  // Path
	FileReadlink FileOp = "readlink" // Path
	FileOpen     FileOp = "open"     // Path, Flags, Perm; the stream then carries FileRead/FileWrite
	FileUnlink   FileOp = "unlink"   // Path; Dir for rmdir
	FileMkdir    FileOp = "mkdir"    // Path, Perm
	FileRename   FileOp = "rename"   // Path -> NewPath
	FileTruncate FileOp = "truncate" // Path, Size
	// FileGetxattr reads the extended attribute Name of Path (of a final
	// symlink itself unless Follow); the reply's Value holds it.
	FileGetxattr FileOp = "getxattr"
	// FileListxattr lists the extended attributes of Path (Follow as for
	// getxattr) in the reply's Names.
	FileListxattr FileOp = "listxattr"
	// FileStatfs describes the file system holding Path (reply: Statfs).
	FileStatfs FileOp = "statfs"
	// FileSetattr changes what Attr says of Path (of a final symlink
	// itself unless Follow, where Linux allows it): chmod, chown, utimensat.
	FileSetattr FileOp = "setattr"
	// FileLink makes NewPath a hard link to Path.
	FileLink FileOp = "link"
	// FileSymlink makes NewPath a symlink whose text is LinkTarget.
	FileSymlink FileOp = "symlink"
	// FileAccess checks Path as access(2) does for the mode in Perm
	// (F_OK, or R_OK|W_OK|X_OK; of a final symlink itself unless Follow):
	// the agent's answer, since the agent is who opens the target's files
	// for the program. The reply is empty; a refusal is an ErrorReply
	// (EACCES, EROFS, ENOENT, ...).
	FileAccess FileOp = "access"
)

// SetAttr is what a FileSetattr changes; nil fields stay as they are.
type SetAttr struct {
	Mode *uint32 `json:"mode,omitempty"` // permission bits (and suid, sgid, sticky)
	UID  *uint32 `json:"uid,omitempty"`
	GID  *uint32 `json:"gid,omitempty"`
	// Atime and Mtime are nanoseconds since the epoch; TimeNow means the
	// target's clock now.
	Atime *int64 `json:"atime_ns,omitempty"`
	Mtime *int64 `json:"mtime_ns,omitempty"`
}

// TimeNow in SetAttr.Atime/Mtime: the target's current time.
const TimeNow = -1

// FileRequest is one operation on the target's file system. Paths are
// absolute and resolved inside the target's root: symlinks cannot lead
// out of it.
type FileRequest struct {
	Op      FileOp `json:"op"`
	Path    string `json:"path"`
	NewPath string `json:"new_path,omitempty"`
	Flags   int    `json:"flags,omitempty"` // open(2) flags
	Perm    uint32 `json:"perm,omitempty"`  // a new file's mode; access(2)'s mode for access
	Follow  bool   `json:"follow,omitempty"`
	Dir     bool   `json:"dir,omitempty"`
	Size    int64  `json:"size,omitempty"` // for truncate
	Name    string `json:"name,omitempty"` // an extended attribute's, for getxattr
	// LinkTarget is a new symlink's text, for symlink.
	LinkTarget string   `json:"link_target,omitempty"`
	Attr       *SetAttr `json:"attr,omitempty"` // for setattr
}

// FileInfo is what stat(2) says about a file.
type FileInfo struct {
	Mode  uint32 `json:"mode"` // st_mode: type and permission bits
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Atime int64  `json:"atime_ns"`
	Ctime int64  `json:"ctime_ns"`
	Ino   uint64 `json:"ino"`
	Dev   uint64 `json:"dev"`
	Nlink uint64 `json:"nlink"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	// Mask is the statx(2) result mask the target's kernel gave: with
	// STATX_BLOCKS, Blocks (512-byte units) and Blksize are the file's
	// own; with STATX_BTIME, Btime is its birth time. 0 from an agent
	// before these fields: clients then estimate blocks from the size.
	Mask    uint32 `json:"statx_mask,omitempty"`
	Blocks  int64  `json:"blocks,omitempty"`
	Blksize int64  `json:"blksize,omitempty"`
	Btime   int64  `json:"btime_ns,omitempty"`
	Rdev    uint64 `json:"rdev,omitempty"` // a device file's device
}

// The bits of FileInfo.Mask (statx(2)'s STATX_*), here for every
// platform the protocol builds on.
const (
	StatxBasicStats = 0x7ff
	StatxBlocks     = 0x400
	StatxBtime      = 0x800
)

// Space returns the file's size on disk (512-byte blocks) and its
// preferred I/O block size: the target's, or for an agent before Mask an
// estimate from the size (4096-byte blocks, no holes).
func (fi *FileInfo) Space() (blocks, blksize int64) {
	if fi.Mask&StatxBlocks != 0 && fi.Blksize > 0 {
		return fi.Blocks, fi.Blksize
	}
	return (fi.Size + 4095) / 4096 * 8, 4096
}

// DirEntry is one directory entry.
type DirEntry struct {
	Name string `json:"name"`
	Mode uint32 `json:"mode"` // type bits only
	Ino  uint64 `json:"ino"`
	Dev  uint64 `json:"dev,omitempty"`
}

// FileReply answers a FileRequest. Errors come as ErrorReply with an errno
// name in Code ("ENOENT", "EACCES", ...).
type FileReply struct {
	Info    *FileInfo   `json:"info,omitempty"`
	Entries []DirEntry  `json:"entries,omitempty"`
	Target  string      `json:"target,omitempty"`
	Value   []byte      `json:"value,omitempty"`  // getxattr
	Names   []string    `json:"names,omitempty"`  // listxattr
	Statfs  *StatfsInfo `json:"statfs,omitempty"` // statfs
}

// StatfsInfo is what statfs(2) says about a file system.
type StatfsInfo struct {
	Type    int64    `json:"type"` // f_type, the file system's magic number
	Bsize   int64    `json:"bsize"`
	Frsize  int64    `json:"frsize"`
	Blocks  uint64   `json:"blocks"`
	Bfree   uint64   `json:"bfree"`
	Bavail  uint64   `json:"bavail"`
	Files   uint64   `json:"files"`
	Ffree   uint64   `json:"ffree"`
	Namelen int64    `json:"namelen"`
	Flags   int64    `json:"flags"`
	Fsid    [2]int32 `json:"fsid"`
}

// FileRead asks for up to Len bytes at Off of an open file.
type FileRead struct {
	Off int64 `json:"off"`
	Len int   `json:"len"`
}

// FileData answers a FileRead (EOF when the end was reached) or a
// FileWrite (N bytes written).
type FileData struct {
	Data []byte `json:"data,omitempty"`
	EOF  bool   `json:"eof,omitempty"`
	N    int    `json:"n,omitempty"`
}

// FileWrite writes Data at Off of an open file.
type FileWrite struct {
	Off  int64  `json:"off"`
	Data []byte `json:"data"`
}

func (*FileRequest) Type() Type { return TypeFileRequest }
func (*FileReply) Type() Type   { return TypeFileReply }
func (*FileRead) Type() Type    { return TypeFileRead }
func (*FileData) Type() Type    { return TypeFileData }
func (*FileWrite) Type() Type   { return TypeFileWrite }

func (*Subscribe) Type() Type      { return TypeSubscribe }
func (*SubscribeReply) Type() Type { return TypeSubscribeReply }
func (*Incoming) Type() Type       { return TypeIncoming }

func (*Bye) Type() Type      { return TypeBye }
func (*ByeReply) Type() Type { return TypeByeReply }

func (*Hello) Type() Type        { return TypeHello }
func (*HelloReply) Type() Type   { return TypeHelloReply }
func (*ErrorReply) Type() Type   { return TypeError }
func (*EnvRequest) Type() Type   { return TypeEnvRequest }
func (*EnvReply) Type() Type     { return TypeEnvReply }
func (*DNSRequest) Type() Type   { return TypeDNSRequest }
func (*DNSReply) Type() Type     { return TypeDNSReply }
func (*DialRequest) Type() Type  { return TypeDialRequest }
func (*DialReply) Type() Type    { return TypeDialReply }
func (*UDPOpen) Type() Type      { return TypeUDPOpen }
func (*UDPOpenReply) Type() Type { return TypeUDPOpenReply }
func (*Datagram) Type() Type     { return TypeDatagram }

func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return &Hello{}
	case TypeHelloReply:
		return &HelloReply{}
	case TypeError:
		return &ErrorReply{}
	case TypeEnvRequest:
		return &EnvRequest{}
	case TypeEnvReply:
		return &EnvReply{}
	case TypeDNSRequest:
		return &DNSRequest{}
	case TypeDNSReply:
		return &DNSReply{}
	case TypeDialRequest:
		return &DialRequest{}
	case TypeDialReply:
		return &DialReply{}
	case TypeUDPOpen:
		return &UDPOpen{}
	case TypeUDPOpenReply:
		return &UDPOpenReply{}
	case TypeDatagram:
		return &Datagram{}
	case TypeSubscribe:
		return &Subscribe{}
	case TypeSubscribeReply:
		return &SubscribeReply{}
	case TypeIncoming:
		return &Incoming{}
	case TypeFileRequest:
		return &FileRequest{}
	case TypeFileReply:
		return &FileReply{}
	case TypeFileRead:
		return &FileRead{}
	case TypeFileData:
		return &FileData{}
	case TypeFileWrite:
		return &FileWrite{}
	case TypeBye:
		return &Bye{}
	case TypeByeReply:
		return &ByeReply{}
	}
	return nil
}

// binaryMessage is a message with a compact binary body: bulk file data,
// which JSON would carry in base64 (measured on loopback, 1 MiB reads of
// a remote file: 70 MB/s in JSON, 250 MB/s binary).
type binaryMessage interface {
	Message
	appendBinary(b []byte) []byte
	decodeBinary(b []byte) error
}

// FileData body: flags (1 byte: 1 = EOF) | N (uint32) | Data.
func (m *FileData) appendBinary(b []byte) []byte {
	var flags byte
	if m.EOF {
		flags = 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(m.N))
	return append(b, m.Data...)
}

func (m *FileData) decodeBinary(b []byte) error {
	if len(b) < 5 {
		return fmt.Errorf("file data body of %d bytes", len(b))
	}
	m.EOF = b[0]&1 != 0
	m.N = int(binary.BigEndian.Uint32(b[1:]))
	m.Data = nil
	if len(b) > 5 {
		m.Data = b[5:]
	}
	return nil
}

// FileWrite body: Off (int64) | Data.
func (m *FileWrite) appendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(m.Off))
	return append(b, m.Data...)
}

func (m *FileWrite) decodeBinary(b []byte) error {
	if len(b) < 8 {
		return fmt.Errorf("file write body of %d bytes", len(b))
	}
	m.Off = int64(binary.BigEndian.Uint64(b))
	m.Data = nil
	if len(b) > 8 {
		m.Data = b[8:]
	}
	return nil
}

func binarySize(m binaryMessage) int {
	switch m := m.(type) {
	case *FileData:
		return len(m.Data)
	case *FileWrite:
		return len(m.Data)
	}
	return 0
}

// Encode returns the frame for m.
func Encode(m Message) ([]byte, error) {
	if bm, ok := m.(binaryMessage); ok {
		frame := bm.appendBinary(make([]byte, 5, 5+16+binarySize(bm)))
		if len(frame)-4 > MaxFrame {
			return nil, fmt.Errorf("encode %T: %d bytes is more than the %d-byte frame limit", m, len(frame)-4, MaxFrame)
		}
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		frame[4] = byte(m.Type())
		return frame, nil
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	if len(body)+1 > MaxFrame {
		return nil, fmt.Errorf("encode %T: %d bytes is more than the %d-byte frame limit", m, len(body)+1, MaxFrame)
	}
	frame := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(frame, uint32(1+len(body)))
	frame[4] = byte(m.Type())
	copy(frame[5:], body)
	return frame, nil
}

// Write writes m as one frame.
func Write(w io.Writer, m Message) error {
	frame, err := Encode(m)
	if err != nil {
		return err
	}
	_, err = w.Write(frame)
	return err
}

// ErrFrame reports a malformed frame.
var ErrFrame = errors.New("malformed protocol frame")

// Read reads one frame.
func Read(r io.Reader) (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return nil, fmt.Errorf("%w: length %d (limit %d)", ErrFrame, n, MaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return decodeBody(body)
}

// Decode decodes one complete frame held in b.
func Decode(b []byte) (Message, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a header", ErrFrame, len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if n == 0 || n > MaxFrame || int(n) != len(b)-4 {
		return nil, fmt.Errorf("%w: length %d does not match %d bytes", ErrFrame, n, len(b)-4)
	}
	return decodeBody(b[4:])
}

func decodeBody(body []byte) (Message, error) {
	t := Type(body[0])
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrFrame, t)
	}
	if bm, ok := m.(binaryMessage); ok {
		if err := bm.decodeBinary(body[1:]); err != nil {
			return nil, fmt.Errorf("%w: message type %d: %v", ErrFrame, t, err)
		}
		return m, nil
	}
	if err := json.Unmarshal(body[1:], m); err != nil {
		return nil, fmt.Errorf("%w: message type %d: %v", ErrFrame, t, err)
	}
	return m, nil
}

// ReadReply reads a reply and checks its type: an ErrorReply is returned
// as an error, and so is any other unexpected message.
func ReadReply[T Message](r io.Reader) (T, error) {
	var zero T
	m, err := Read(r)
	if err != nil {
		return zero, err
	}
	if e, ok := m.(*ErrorReply); ok {
		return zero, e
	}
	if t, ok := m.(T); ok {
		return t, nil
	}
	return zero, fmt.Errorf("%w: expected %T, got %T", ErrFrame, zero, m)
}

// MuxConfig is the yamux configuration both ends use. Keepalives are the
// heartbeat: a peer that stops answering is dropped within about
// KeepAliveInterval + ConnectionWriteTimeout.
func MuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 2 * time.Second
	c.ConnectionWriteTimeout = 3 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	// A larger window keeps bulk transfers from stalling on round trips.
	c.MaxStreamWindowSize = 4 << 20
	c.LogOutput = io.Discard
	return c
}

// CheckVersion compares the peer's version with ours.
func CheckVersion(peer int, peerName string) error {
	if peer != Version {
		return fmt.Errorf("protocol version mismatch: this side speaks version %d, %s speaks version %d; use the same mirrord version on both sides", Version, peerName, peer)
	}
	return nil
}

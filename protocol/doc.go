// Package protocol is what the internal proxy (in the mirrord CLI process)
// and the agent (next to the target) say to each other.
//
// One TCP connection carries a yamux session. Every operation opens its own
// stream and starts with one request frame; the agent answers with one
// reply frame. For a TCP connection (Dial) the stream then carries the raw
// bytes both ways, so flow control and back-pressure come from yamux, not
// from code here. For UDP (UDPOpen) the stream then carries Datagram frames.
// The first stream of a session is the handshake (Hello), which checks
// that both ends speak the same protocol Version.
//
// A frame is a 4-byte big-endian length, a 1-byte message type, and the
// message as JSON. Decode rejects malformed input with an error, never a
// panic (see the fuzz test).
package protocol

// Package relay copies bytes between two connections the way a direct
// connection would behave: when one side finishes sending, the other
// side's write half is closed so the EOF reaches it, while data still flows
// the other way. The agent, the netstack, the internal proxy and
// port-forward all relay connections; this is the one implementation.
package relay

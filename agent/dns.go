package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/miekg/dns"
)

// exchange sends a DNS query, as the program wrote it, to the target's
// nameservers from inside the target's network namespace, and returns the
// first usable answer. Search-domain expansion is not done here: the
// program's own resolver does it, with the search list and ndots of the
// target that the sandbox's resolv.conf copies.
func (a *Agent) exchange(query []byte) ([]byte, error) {
	if a.resolver == nil {
		return nil, errors.New("the target has no usable resolv.conf")
	}
	msg := new(dns.Msg)
	if err := msg.Unpack(query); err != nil {
		return nil, fmt.Errorf("malformed DNS query: %w", err)
	}
	timeout := time.Duration(a.resolver.Timeout) * time.Second
	if timeout <= 0 || timeout > 5*time.Second {
		timeout = 5 * time.Second
	}
	var lastErr error
	for _, server := range a.resolver.Servers {
		addr := joinHostPort(server, a.resolver.Port)
		resp, err := a.exchangeOne(msg, addr, "udp", timeout)
		if err == nil && resp.Truncated {
			// The answer did not fit in a UDP datagram: ask again
			// over TCP, as a stub resolver would.
			resp, err = a.exchangeOne(msg, addr, "tcp", timeout)
		}
		if err != nil {
			lastErr = err
			continue
		}
		resp.Id = msg.Id
		return resp.Pack()
	}
	// Tell the program the server failed, rather than leaving it waiting.
	fail := new(dns.Msg)
	fail.SetRcode(msg, dns.RcodeServerFailure)
	if lastErr != nil {
		a.log.Warn("dns: every nameserver failed", "err", lastErr)
	}
	return fail.Pack()
}

func (a *Agent) exchangeOne(msg *dns.Msg, addr, network string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := a.target.dial(ctx, network, addr, 0)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := &dns.Client{Net: network, Timeout: timeout}
	resp, _, err := c.ExchangeWithConnContext(ctx, msg, &dns.Conn{Conn: conn})
	return resp, err
}

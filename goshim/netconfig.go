package goshim

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// TUNName is the name of the sandbox's network interface.
const TUNName = "mirrord0"

// setupNetwork brings up loopback and creates and configures the TUN
// device, through which every non-loopback destination is routed. It
// returns the device's file.
func setupNetwork(mtu int) (tun *os.File, err error) {
	nl, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	defer nl.Close()

	// A new network namespace has loopback down; programs expect it.
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding the loopback interface: %w", err)
	}
	if err := setLink(nl, uint32(lo.Index), 0); err != nil {
		return nil, capError("bringing up lo", err)
	}

	tun, err = openTUN()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			tun.Close()
		}
	}()
	if err := configureTUN(nl, mtu); err != nil {
		return nil, err
	}
	return tun, nil
}

// openTUN creates the TUN device (IFF_TUN|IFF_NO_PI: plain IP packets).
func openTUN() (*os.File, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: TUNName},
	})
	if err != nil {
		// water returns the bare errno from open(2) and an *os.SyscallError
		// from the ioctls that create the interface.
		var se *os.SyscallError
		if errors.As(err, &se) {
			return nil, capError("creating TUN device "+TUNName, err)
		}
		return nil, tunOpenError(err)
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, fmt.Errorf("creating TUN device %s: unexpected %T from water", TUNName, ifce.ReadWriteCloser)
	}
	return f, nil
}

// configureTUN sets the device's MTU, addresses and default routes, and
// brings it up.
func configureTUN(nl *rtnetlink.Conn, mtu int) error {
	ifc, err := net.InterfaceByName(TUNName)
	if err != nil {
		return fmt.Errorf("finding %s: %w", TUNName, err)
	}
	idx := uint32(ifc.Index)
	if err := setLink(nl, idx, mtu); err != nil {
		return capError(fmt.Sprintf("setting %s up with MTU %d", TUNName, mtu), err)
	}
	if err := addAddress(nl, idx, SandboxAddr4); err != nil {
		return capError(fmt.Sprintf("adding %s to %s", SandboxAddr4, TUNName), err)
	}
	if err := addDefaultRoute(nl, idx, SandboxAddr4); err != nil {
		return capError(fmt.Sprintf("adding the IPv4 default route via %s", TUNName), err)
	}
	// IPv6 is optional: a kernel booted with ipv6.disable=1, or a system
	// with disable_ipv6 set, refuses these. The program then sees an
	// IPv4-only network, as it would on such a host.
	if err := addAddress(nl, idx, SandboxAddr6); err == nil {
		_ = addDefaultRoute(nl, idx, SandboxAddr6)
	}
	return nil
}

// setLink brings a link up, setting its MTU if mtu is not zero.
func setLink(nl *rtnetlink.Conn, idx uint32, mtu int) error {
	msg := &rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC,
		Index:  idx,
		Flags:  unix.IFF_UP,
		Change: unix.IFF_UP,
	}
	if mtu > 0 {
		msg.Attributes = &rtnetlink.LinkAttributes{MTU: uint32(mtu)}
	}
	return nl.Link.Set(msg)
}

// addAddress assigns addr as a host address (/32 or /128): the device is
// point-to-point, so no on-link prefix is needed.
func addAddress(nl *rtnetlink.Conn, idx uint32, addr netip.Addr) error {
	ip := net.IP(addr.AsSlice())
	msg := &rtnetlink.AddressMessage{
		Family:       unix.AF_INET,
		PrefixLength: 32,
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Index:        idx,
		Attributes:   &rtnetlink.AddressAttributes{Address: ip, Local: ip},
	}
	if addr.Is6() {
		msg.Family, msg.PrefixLength = unix.AF_INET6, 128
		// Duplicate address detection would leave the address tentative
		// (unusable) for a second; nothing else is on this link.
		msg.Attributes = &rtnetlink.AddressAttributes{Address: ip, Flags: unix.IFA_F_NODAD}
	}
	return nl.Address.New(msg)
}

// addDefaultRoute routes every destination of src's family into the
// device, with src as the preferred source address.
func addDefaultRoute(nl *rtnetlink.Conn, idx uint32, src netip.Addr) error {
	msg := &rtnetlink.RouteMessage{
		Family:   unix.AF_INET,
		Table:    unix.RT_TABLE_MAIN,
		Protocol: unix.RTPROT_BOOT,
		Scope:    unix.RT_SCOPE_LINK, // no gateway: destinations are "on" the device
		Type:     unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			OutIface: idx,
			Src:      net.IP(src.AsSlice()),
		},
	}
	if src.Is6() {
		msg.Family, msg.Scope = unix.AF_INET6, unix.RT_SCOPE_UNIVERSE
	}
	return nl.Route.Add(msg)
}

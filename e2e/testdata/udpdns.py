# Sends one DNS query over UDP straight to a server address (the cluster's
# DNS Service, a ClusterIP, or a DNS pod's IPv6 address) and prints the A
# records ("udp-dns IP") or, with a third argument AAAA, the AAAA records
# ("udp-dns6 IP") of the answer: UDP to a cluster-only address, from the
# program's own socket.
import socket, struct, sys

server, name = sys.argv[1], sys.argv[2]
qtype = 28 if sys.argv[3:] == ["AAAA"] else 1
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(q, (server, 53))
data, src = s.recvfrom(4096)
if src[0] != server:
    sys.exit("answer from %s, not %s" % (src[0], server))
ancount = struct.unpack(">H", data[6:8])[0]
# The answer section follows the question (same bytes as ours after the header).
off = len(q)
for _ in range(ancount):
    if data[off] & 0xC0 == 0xC0:
        off += 2
    else:
        while data[off]:
            off += data[off] + 1
        off += 1
    rtype, _, _, rdlen = struct.unpack(">HHIH", data[off:off + 10])
    off += 10
    if rtype == 1:
        print("udp-dns", socket.inet_ntoa(data[off:off + 4]))
    elif rtype == 28:
        print("udp-dns6", socket.inet_ntop(socket.AF_INET6, data[off:off + 16]))
    off += rdlen

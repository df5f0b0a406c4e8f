// mirrord's preload layer for dynamically linked programs.
//
// It hooks the libc calls that reveal where a program runs (connect,
// sendto, getaddrinfo, open, stat, gethostname, ...) and asks the internal
// proxy in the mirrord process what to do, over a unix socket named by
// MIRRORD_LAYER_SOCK. The proxy answers "local" (call libc as if we were
// not here) or gives the remote outcome: a loopback address to connect to
// instead (the proxy relays it through the agent), addresses for a name, a
// file descriptor holding a remote file, or an errno.
//
// Design rules, because this code runs inside every process of the user's
// program tree:
//   - no locks and no shared connection: every request opens its own
//     connection, so fork, threads and signal handlers cannot deadlock on
//     our state;
//   - the per-fd table is a lazily touched anonymous mapping written with
//     plain stores; after fork the child has its own copy, which is right;
//   - a hook that runs before the constructor, or in a process mirrord
//     skips, falls through to libc;
//   - errno is preserved unless the hook reports an error.
//
// The wire format is one request line and one reply line, fields separated
// by tabs (paths containing a tab or newline are left local). See
// intproxy/layer.go for the other side.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
// resolv.h renames p_type (a resolver debug helper); ELF headers need the field.
#undef p_type
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/time.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/xattr.h>
#include <utime.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

extern char **environ;

// ---- state -------------------------------------------------------------

static int active;                    // constructor ran and we are not skipped
static int files_active;              // file hooks on (fs mode is not local)
static int exec_active;               // reroute Go/static children (also when skipped)
static int incoming_active;           // the session delivers incoming connections (MIRRORD_LAYER_INCOMING)
static int unix_active;               // unix_streams patterns are set: ask about unix socket paths
static const char *skip_list;         // MIRRORD_LAYER_SKIP
static const char *skip_env;          // MIRRORD_SKIP_PROCESSES (set by IDE plugins)
static struct sockaddr_un proxy_addr; // the internal proxy's socket
static socklen_t proxy_addr_len;
static char fake_hostname[HOST_NAME_MAX + 1];
static const char *mirrord_exe; // for Go/static children (MIRRORD_LAYER_EXE)

// fd table: what we know about sockets and files we redirected.
enum { FD_NONE = 0, FD_TCP = 1, FD_UDP = 2, FD_UNIX = 3 };
struct fdent {
	unsigned char kind;
	socklen_t peerlen; // original destination (getpeername), 0 if none
	struct sockaddr_storage peer;
	// UDP: the last unconnected destination and its proxy port, so that a
	// socket sending to one server reuses one association.
	socklen_t udplen;
	struct sockaddr_storage udpdst;
	uint16_t udpport;
};
#define MAXFD 65536
static struct fdent *fds;

// table maps a zeroed anonymous region on first use (atomically: threads
// may race here), so that a process that never redirects anything (most
// processes of a build or a shell loop) pays nothing for it.
static void *table(void **slot, size_t size) {
	void *t = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (t) return t;
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) return NULL;
	void *expected = NULL;
	if (!__atomic_compare_exchange_n(slot, &expected, m, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		munmap(m, size);
		return expected;
	}
	return m;
}

// ent returns fd's entry; with create, the table is made if needed.
static struct fdent *ent_get(int fd, int create) {
	if (fd < 0 || fd >= MAXFD) return NULL;
	struct fdent *t = __atomic_load_n(&fds, __ATOMIC_ACQUIRE);
	if (!t && create) t = table((void **)&fds, sizeof(struct fdent) * MAXFD);
	return t ? &t[fd] : NULL;
}

static struct fdent *ent(int fd) { return ent_get(fd, 0); }

// UDP associations: proxy port → original destination, to rewrite the
// source address of replies (recvfrom/recvmsg).
#define MAXASSOC 4096
struct assoc {
	uint16_t port; // written last
	socklen_t len;
	struct sockaddr_storage orig;
};
static struct assoc *assocs;
static unsigned assoc_next;

// ---- real functions ----------------------------------------------------

#define REAL(name) real_##name
#define DECLARE_REAL(ret, name, ...)                                    \
	static ret (*real_##name)(__VA_ARGS__);                             \
	static ret (*get_##name(void))(__VA_ARGS__) {                       \
		if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);          \
		return real_##name;                                             \
	}
#define CALL(name) (get_##name())

DECLARE_REAL(int, connect, int, const struct sockaddr *, socklen_t)
DECLARE_REAL(ssize_t, sendto, int, const void *, size_t, int, const struct sockaddr *, socklen_t)
DECLARE_REAL(ssize_t, sendmsg, int, const struct msghdr *, int)
DECLARE_REAL(ssize_t, recvfrom, int, void *, size_t, int, struct sockaddr *, socklen_t *)
DECLARE_REAL(ssize_t, recvmsg, int, struct msghdr *, int)
DECLARE_REAL(int, getpeername, int, struct sockaddr *, socklen_t *)
DECLARE_REAL(int, listen, int, int)
DECLARE_REAL(int, accept, int, struct sockaddr *, socklen_t *)
DECLARE_REAL(int, accept4, int, struct sockaddr *, socklen_t *, int)
DECLARE_REAL(int, close, int)
DECLARE_REAL(int, dup, int)
DECLARE_REAL(int, dup2, int, int)
DECLARE_REAL(int, dup3, int, int, int)
DECLARE_REAL(int, getaddrinfo, const char *, const char *, const struct addrinfo *, struct addrinfo **)
DECLARE_REAL(struct hostent *, gethostbyname, const char *)
DECLARE_REAL(int, gethostname, char *, size_t)
DECLARE_REAL(int, uname, struct utsname *)
DECLARE_REAL(int, open, const char *, int, ...)
DECLARE_REAL(int, open64, const char *, int, ...)
DECLARE_REAL(int, openat, int, const char *, int, ...)
DECLARE_REAL(int, openat64, int, const char *, int, ...)
DECLARE_REAL(int, __open_2, const char *, int)
DECLARE_REAL(int, __open64_2, const char *, int)
DECLARE_REAL(int, __openat_2, int, const char *, int)
DECLARE_REAL(int, __openat64_2, int, const char *, int)
DECLARE_REAL(FILE *, fopen, const char *, const char *)
DECLARE_REAL(FILE *, fopen64, const char *, const char *)
DECLARE_REAL(DIR *, opendir, const char *)
DECLARE_REAL(int, stat, const char *, struct stat *)
DECLARE_REAL(int, lstat, const char *, struct stat *)
DECLARE_REAL(int, stat64, const char *, struct stat64 *)
DECLARE_REAL(int, lstat64, const char *, struct stat64 *)
DECLARE_REAL(int, fstatat, int, const char *, struct stat *, int)
DECLARE_REAL(int, fstatat64, int, const char *, struct stat64 *, int)
DECLARE_REAL(int, __xstat, int, const char *, struct stat *)
DECLARE_REAL(int, __lxstat, int, const char *, struct stat *)
DECLARE_REAL(int, __xstat64, int, const char *, struct stat64 *)
DECLARE_REAL(int, __lxstat64, int, const char *, struct stat64 *)
DECLARE_REAL(int, __fxstatat, int, int, const char *, struct stat *, int)
DECLARE_REAL(int, __fxstatat64, int, int, const char *, struct stat64 *, int)
DECLARE_REAL(int, statx, int, const char *, int, unsigned, struct statx *)
DECLARE_REAL(int, access, const char *, int)
DECLARE_REAL(int, faccessat, int, const char *, int, int)
DECLARE_REAL(int, eaccess, const char *, int)
DECLARE_REAL(int, euidaccess, const char *, int)
DECLARE_REAL(ssize_t, readlink, const char *, char *, size_t)
DECLARE_REAL(ssize_t, readlinkat, int, const char *, char *, size_t)
DECLARE_REAL(int, execve, const char *, char *const[], char *const[])
DECLARE_REAL(int, execvpe, const char *, char *const[], char *const[])
DECLARE_REAL(int, posix_spawn, pid_t *, const char *, const posix_spawn_file_actions_t *,
             const posix_spawnattr_t *, char *const[], char *const[])
DECLARE_REAL(int, posix_spawnp, pid_t *, const char *, const posix_spawn_file_actions_t *,
             const posix_spawnattr_t *, char *const[], char *const[])

// ---- the proxy connection ----------------------------------------------

// request_fd sends one request line and reads one reply line into resp
// (NUL terminated, newline stripped). sendfd, unless -1, goes with the
// request (SCM_RIGHTS). A file descriptor passed with the reply is stored
// in *fdp (if fdp is not NULL; otherwise it is closed). Returns the reply
// length, or -1 when the proxy cannot be reached — callers then behave as
// if mirrord were not there. errno is preserved.
static int request_fd(const char *req, size_t len, char *resp, size_t cap, int *fdp, int sendfd) {
	int saved = errno;
	if (fdp) *fdp = -1;
	int s = syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) goto fail;
	if (syscall(SYS_connect, s, &proxy_addr, proxy_addr_len) < 0) goto fail_close;
	for (size_t off = 0; off < len;) {
		ssize_t n;
		if (off == 0 && sendfd >= 0) {
			char cbuf[CMSG_SPACE(sizeof(int))];
			memset(cbuf, 0, sizeof cbuf);
			struct iovec iov = {(void *)req, len};
			struct msghdr mh = {0};
			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof cbuf;
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &sendfd, sizeof(int));
			n = syscall(SYS_sendmsg, s, &mh, MSG_NOSIGNAL);
		} else {
			n = syscall(SYS_sendto, s, req + off, len - off, MSG_NOSIGNAL, NULL, 0);
		}
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) goto fail_close;
		off += n;
	}
	size_t got = 0;
	for (;;) {
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {resp + got, cap - 1 - got};
		struct msghdr mh = {0};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof cbuf;
		ssize_t n = syscall(SYS_recvmsg, s, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) goto fail_close;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				int fd;
				memcpy(&fd, CMSG_DATA(c), sizeof fd);
				if (fdp && *fdp < 0) *fdp = fd;
				else syscall(SYS_close, fd);
			}
		}
		got += n;
		if (memchr(resp, '\n', got) || got >= cap - 1) break;
	}
	syscall(SYS_close, s);
	resp[got] = 0;
	char *nl = memchr(resp, '\n', got);
	if (nl) *nl = 0;
	errno = saved;
	return nl ? (int)(nl - resp) : (int)got;
fail_close:
	syscall(SYS_close, s);
fail:
	if (fdp && *fdp >= 0) {
		syscall(SYS_close, *fdp);
		*fdp = -1;
	}
	errno = saved;
	return -1;
}

static int request(const char *req, size_t len, char *resp, size_t cap, int *fdp) {
	return request_fd(req, len, resp, cap, fdp, -1);
}

// field returns the i-th tab-separated field of line (0-based), copied
// into buf; NULL if there is none.
static const char *field(const char *line, int i, char *buf, size_t cap) {
	const char *p = line;
	for (; i > 0; i--) {
		p = strchr(p, '\t');
		if (!p) return NULL;
		p++;
	}
	size_t n = strcspn(p, "\t");
	if (n >= cap) n = cap - 1;
	memcpy(buf, p, n);
	buf[n] = 0;
	return buf;
}

static long field_long(const char *line, int i) {
	char b[32];
	return field(line, i, b, sizeof b) ? strtol(b, NULL, 10) : 0;
}

static long long field_ll(const char *line, int i) {
	char b[32];
	return field(line, i, b, sizeof b) ? strtoll(b, NULL, 10) : 0;
}

static unsigned long long field_ull(const char *line, int i) {
	char b[32];
	return field(line, i, b, sizeof b) ? strtoull(b, NULL, 10) : 0;
}

// reply_errno: "E\t<errno>" → that errno (>0); anything else → 0.
static int reply_errno(const char *resp) {
	if (resp[0] == 'E' && resp[1] == '\t') {
		int e = (int)field_long(resp, 1);
		return e > 0 ? e : EIO;
	}
	return 0;
}

// ---- constructor -------------------------------------------------------

// skipped reports whether the executable name is in list (';'-separated).
static int skipped(const char *list, const char *name) {
	if (!list || !*list || !name) return 0;
	const char *slash = strrchr(name, '/');
	const char *self = slash ? slash + 1 : name;
	size_t n = strlen(self);
	for (const char *p = list; *p;) {
		size_t l = strcspn(p, ";,");
		if (l == n && strncmp(p, self, n) == 0) return 1;
		p += l;
		if (*p) p++;
	}
	return 0;
}

// is_skipped checks the session's list and the one an IDE put in the
// program's environment.
static int is_skipped(const char *name) { return skipped(skip_list, name) || skipped(skip_env, name); }

// The constructor only notes whether mirrord is on (MIRRORD_LAYER_SOCK);
// the rest of the set-up waits for the first hook that needs it. The
// library loads into every process of the program's tree, most of which
// (a shell loop's /bin/true, a build's compilers) call no hook at all, and
// on a VM every libc page the constructor touches (stdio, string search)
// is a page fault: doing the set-up eagerly cost ~40 µs per exec.
static const char *layer_sock;
static int layer_ready;

static void ide_start(char **argv);

// glibc passes argc, argv and envp to constructors.
__attribute__((constructor)) static void layer_init(int argc, char **argv, char **envp) {
	(void)argc;
	(void)envp;
	const char *sock = getenv("MIRRORD_LAYER_SOCK");
	if (!sock || !*sock) return;
	layer_sock = sock;
	const char *hold = getenv("MIRRORD_LAYER_HOLD");
	if (hold && strcmp(hold, "1") == 0) ide_start(argv);
}

// layer_setup finishes what the constructor left. Threads may race here:
// they all write the same values, and layer_ready is published last. No
// locks and no allocation, so it is safe in a forked child or a signal
// handler.
static void layer_setup(void) {
	const char *sock = layer_sock;
	if (!sock || strlen(sock) >= sizeof proxy_addr.sun_path) {
		__atomic_store_n(&layer_ready, 1, __ATOMIC_RELEASE);
		return;
	}
	proxy_addr.sun_family = AF_UNIX;
	size_t n = strlen(sock);
	memcpy(proxy_addr.sun_path, sock, n);
	if (sock[0] == '@') proxy_addr.sun_path[0] = 0; // abstract socket
	proxy_addr_len = offsetof(struct sockaddr_un, sun_path) + n;
	const char *h = getenv("MIRRORD_LAYER_HOSTNAME");
	if (h) {
		size_t hl = strnlen(h, sizeof fake_hostname - 1);
		memcpy(fake_hostname, h, hl);
		fake_hostname[hl] = 0;
	}
	mirrord_exe = getenv("MIRRORD_LAYER_EXE");
	// A skipped process (a build tool such as `go`) runs untouched, but the
	// programs it starts are still layered: `go run` and `go test` build
	// locally and run the result in the target's context.
	skip_list = getenv("MIRRORD_LAYER_SKIP");
	skip_env = getenv("MIRRORD_SKIP_PROCESSES");
	const char *fs = getenv("MIRRORD_LAYER_FS");
	files_active = !fs || strcmp(fs, "0") != 0;
	const char *inc = getenv("MIRRORD_LAYER_INCOMING");
	incoming_active = !inc || strcmp(inc, "0") != 0;
	const char *un = getenv("MIRRORD_LAYER_UNIX");
	unix_active = un && strcmp(un, "1") == 0;
	exec_active = 1;
	active = !is_skipped(program_invocation_short_name);
	__atomic_store_n(&layer_ready, 1, __ATOMIC_RELEASE);
}

// layer_set_up reports whether mirrord is on, finishing the set-up first.
static inline int layer_set_up(void) {
	if (!layer_sock) return 0;
	if (!__atomic_load_n(&layer_ready, __ATOMIC_ACQUIRE)) layer_setup();
	return 1;
}

// layer_on reports whether the hooks redirect this process's calls.
static inline int layer_on(void) { return layer_set_up() && active; }

// exec_on reports whether Go/static children are sent to the netstack
// engine (also from a skipped process).
static inline int exec_on(void) { return layer_set_up() && exec_active; }

// ---- addresses ---------------------------------------------------------

// addr_text formats an IPv4/IPv6 socket address as "ip\tport" (v4-mapped
// IPv6 as IPv4). Returns 0 if sa is not an internet address.
static int addr_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap) {
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
		snprintf(buf, cap, "%s\t%u", ip, ntohs(in->sin_port));
		return 1;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof ip);
		else
			inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
		snprintf(buf, cap, "%s\t%u", ip, ntohs(in6->sin6_port));
		return 1;
	}
	return 0;
}

static int is_loopback(const struct sockaddr *sa) {
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a)) return a->s6_addr[12] == 127;
	return IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a);
}

// proxy_sockaddr builds 127.0.0.1:port in the socket's family (v4-mapped
// for IPv6 sockets).
static socklen_t proxy_sockaddr(int family, uint16_t port, struct sockaddr_storage *out) {
	memset(out, 0, sizeof *out);
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)out;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		in6->sin6_addr.s6_addr[10] = 0xff;
		in6->sin6_addr.s6_addr[11] = 0xff;
		in6->sin6_addr.s6_addr[12] = 127;
		in6->sin6_addr.s6_addr[15] = 1;
		return sizeof *in6;
	}
	struct sockaddr_in *in = (void *)out;
	in->sin_family = AF_INET;
	in->sin_port = htons(port);
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof *in;
}

static int sock_type(int fd) {
	int t = 0;
	socklen_t l = sizeof t;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l) < 0) return -1;
	return t;
}

static int sock_family(int fd) {
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &l) < 0) return -1;
	return ss.ss_family;
}

// route asks the proxy where a connection or datagram of socket fd to sa
// goes; the socket goes with the request. Returns 0 for local, a proxy
// port (>0) to send datagrams to, ROUTE_CONNECTED when the proxy has
// connected the (TCP) socket to its relay of the remote connection, or
// -errno. The proxy connects the socket itself, and takes datagrams only
// from it, so that no other local user's process can take the place of
// the program's on mirrord's loopback ports.
#define ROUTE_CONNECTED 0x10000
static int route(int fd, const char *proto, const struct sockaddr *sa, socklen_t len) {
	char a[80], req[128], resp[128];
	if (!addr_text(sa, len, a, sizeof a) || is_loopback(sa)) return 0;
	int n = snprintf(req, sizeof req, "C\t%s\t%s\n", proto, a);
	if (request_fd(req, n, resp, sizeof resp, NULL, fd) < 0) return 0;
	int e = reply_errno(resp);
	if (e) return -e;
	if (resp[0] == 'Y' && resp[1] == 0) return ROUTE_CONNECTED;
	if (resp[0] == 'R') return (int)field_long(resp, 2);
	return 0;
}

static void remember_assoc(uint16_t port, const struct sockaddr *orig, socklen_t len) {
	if (!table((void **)&assocs, sizeof(struct assoc) * MAXASSOC)) return;
	unsigned i = __atomic_fetch_add(&assoc_next, 1, __ATOMIC_RELAXED) % MAXASSOC;
	assocs[i].port = 0;
	if (len > sizeof assocs[i].orig) len = sizeof assocs[i].orig;
	memcpy(&assocs[i].orig, orig, len);
	assocs[i].len = len;
	__atomic_store_n(&assocs[i].port, port, __ATOMIC_RELEASE);
}

// rewrite_source turns a reply's source 127.0.0.1:<proxy port> back into
// the address the program sent to.
static void rewrite_source(struct sockaddr *sa, socklen_t *len) {
	if (!__atomic_load_n(&assocs, __ATOMIC_ACQUIRE) || !sa || !len || *len == 0) return;
	uint16_t port;
	if (sa->sa_family == AF_INET) port = ntohs(((struct sockaddr_in *)sa)->sin_port);
	else if (sa->sa_family == AF_INET6) port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
	else return;
	if (!is_loopback(sa)) return;
	for (unsigned i = 0; i < MAXASSOC; i++) {
		if (__atomic_load_n(&assocs[i].port, __ATOMIC_ACQUIRE) != port) continue;
		struct sockaddr_storage *o = &assocs[i].orig;
		if (o->ss_family != sa->sa_family) {
			if (sa->sa_family == AF_INET6 && o->ss_family == AF_INET) {
				// Present an IPv4 origin to an IPv6 socket as v4-mapped.
				struct sockaddr_in6 m = {0};
				m.sin6_family = AF_INET6;
				m.sin6_port = ((struct sockaddr_in *)o)->sin_port;
				m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
				memcpy(&m.sin6_addr.s6_addr[12], &((struct sockaddr_in *)o)->sin_addr, 4);
				socklen_t l = *len < sizeof m ? *len : sizeof m;
				memcpy(sa, &m, l);
				*len = sizeof m;
			}
			return;
		}
		socklen_t l = *len < assocs[i].len ? *len : assocs[i].len;
		memcpy(sa, o, l);
		*len = assocs[i].len;
		return;
	}
}

// ---- sockets -----------------------------------------------------------

static void forget(int fd);

// unix_route asks the proxy where a stream connection to the unix socket
// path in sa goes (feature.network.outgoing.unix_streams). Returns 0 to
// connect locally (also for abstract and unnamed addresses, which are
// this machine's, and for paths the line protocol cannot carry), -errno
// when the target's socket cannot be reached, or 1 with *out set to the
// proxy's listener that relays to the target's socket. *peer gets the
// address getpeername shows, as the kernel would give it: the family, the
// path and its NUL.
static int unix_route(const struct sockaddr *sa, socklen_t len, struct sockaddr_un *out, socklen_t *outlen,
                      struct sockaddr_un *peer, socklen_t *peerlen) {
	const struct sockaddr_un *un = (const void *)sa;
	const size_t off = offsetof(struct sockaddr_un, sun_path);
	if (len <= off || un->sun_path[0] == 0) return 0;
	size_t max = len - off < sizeof un->sun_path ? len - off : sizeof un->sun_path;
	size_t n = strnlen(un->sun_path, max);
	char path[sizeof un->sun_path + 1];
	memcpy(path, un->sun_path, n);
	path[n] = 0;
	if (strpbrk(path, "\t\n")) return 0;
	char req[sizeof path + 16], resp[sizeof out->sun_path + 16];
	int rl = snprintf(req, sizeof req, "C\tunix\t%s\n", path);
	if (request(req, rl, resp, sizeof resp, NULL) < 0) return 0;
	int e = reply_errno(resp);
	if (e) return -e;
	char rp[sizeof out->sun_path];
	if (resp[0] != 'R' || !field(resp, 1, rp, sizeof rp) || !rp[0]) return 0;
	memset(out, 0, sizeof *out);
	out->sun_family = AF_UNIX;
	size_t rn = strlen(rp);
	memcpy(out->sun_path, rp, rn);
	*outlen = off + rn + 1;
	memset(peer, 0, sizeof *peer);
	peer->sun_family = AF_UNIX;
	memcpy(peer->sun_path, path, n);
	*peerlen = off + n + (n < sizeof peer->sun_path ? 1 : 0);
	return 1;
}

// unix_connect connects a stream socket to a unix socket path of the
// target through the proxy's relay; anything else goes to libc. The
// program's socket stays its own, connected to a unix socket, so every
// other call on it is the kernel's.
static int unix_connect(int fd, const struct sockaddr *sa, socklen_t len) {
	if (!layer_on() || !unix_active || sock_type(fd) != SOCK_STREAM) return CALL(connect)(fd, sa, len);
	struct sockaddr_un relay, peer;
	socklen_t rl, pl;
	int r = unix_route(sa, len, &relay, &rl, &peer, &pl);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	if (r == 0) return CALL(connect)(fd, sa, len);
	r = CALL(connect)(fd, (struct sockaddr *)&relay, rl);
	int saved = errno;
	struct fdent *e = ent_get(fd, 1);
	if (e && r == 0) {
		e->kind = FD_UNIX;
		e->peerlen = pl;
		memcpy(&e->peer, &peer, pl);
	}
	errno = saved;
	return r;
}

EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len) {
	if (sa && sa->sa_family == AF_UNIX) return unix_connect(fd, sa, len);
	if (!layer_on() || !sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return CALL(connect)(fd, sa, len);
	int type = sock_type(fd);
	if (type != SOCK_STREAM && type != SOCK_DGRAM) return CALL(connect)(fd, sa, len);
	struct fdent *old = ent(fd);
	if (type == SOCK_STREAM && old && old->kind == FD_TCP) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		// Connected through mirrord already (a second connect after
		// EINPROGRESS): the kernel's answer (EISCONN), and no new route.
		if (CALL(getpeername)(fd, (struct sockaddr *)&ss, &sl) == 0) return CALL(connect)(fd, sa, len);
		forget(fd); // a number reused behind our back
	}
	int port = route(fd, type == SOCK_STREAM ? "tcp" : "udp", sa, len);
	if (port < 0) {
		errno = -port;
		return -1;
	}
	if (port == 0) return CALL(connect)(fd, sa, len);
	if (port == ROUTE_CONNECTED) {
		struct fdent *e = ent_get(fd, 1);
		if (e) {
			e->kind = FD_TCP;
			e->peerlen = len < sizeof e->peer ? len : sizeof e->peer;
			memcpy(&e->peer, sa, e->peerlen);
		}
		// As the kernel's connect to loopback answers: a non-blocking
		// socket is "in progress" (and is writable at once).
		int fl = syscall(SYS_fcntl, fd, F_GETFL, 0);
		if (fl >= 0 && (fl & O_NONBLOCK)) {
			errno = EINPROGRESS;
			return -1;
		}
		return 0;
	}
	struct sockaddr_storage px;
	socklen_t pl = proxy_sockaddr(sa->sa_family, port, &px);
	if (type == SOCK_DGRAM) remember_assoc(port, sa, len);
	int r = CALL(connect)(fd, (struct sockaddr *)&px, pl);
	int saved = errno;
	struct fdent *e = ent_get(fd, 1);
	if (e && (r == 0 || errno == EINPROGRESS)) {
		e->kind = type == SOCK_STREAM ? FD_TCP : FD_UDP;
		e->peerlen = len < sizeof e->peer ? len : sizeof e->peer;
		memcpy(&e->peer, sa, e->peerlen);
	}
	errno = saved;
	return r;
}

// udp_dest maps an unconnected datagram's destination to its proxy
// address; returns 0 and leaves *out untouched when it stays local.
static int udp_dest(int fd, const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out, socklen_t *outlen) {
	if (!layer_on() || !sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) return 0;
	if (sock_type(fd) != SOCK_DGRAM) return 0;
	struct fdent *e = ent_get(fd, 1);
	int port;
	if (e && e->udpport && e->udplen == len && memcmp(&e->udpdst, sa, len) == 0) {
		port = e->udpport;
	} else {
		port = route(fd, "udp", sa, len);
		if (port < 0) {
			errno = -port;
			return -1;
		}
		if (port == 0) return 0;
		remember_assoc(port, sa, len);
		if (e && len <= sizeof e->udpdst) {
			e->udplen = len;
			memcpy(&e->udpdst, sa, len);
			e->udpport = port;
		}
	}
	int fam = sock_family(fd);
	*outlen = proxy_sockaddr(fam == AF_INET6 ? AF_INET6 : AF_INET, port, out);
	return 1;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa, socklen_t len) {
	struct sockaddr_storage px;
	socklen_t pl;
	int r = udp_dest(fd, sa, len, &px, &pl);
	if (r < 0) return -1;
	if (r > 0) return CALL(sendto)(fd, buf, n, flags, (struct sockaddr *)&px, pl);
	return CALL(sendto)(fd, buf, n, flags, sa, len);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *mh, int flags) {
	if (!mh || !mh->msg_name) return CALL(sendmsg)(fd, mh, flags);
	struct sockaddr_storage px;
	socklen_t pl;
	int r = udp_dest(fd, mh->msg_name, mh->msg_namelen, &px, &pl);
	if (r < 0) return -1;
	if (r == 0) return CALL(sendmsg)(fd, mh, flags);
	struct msghdr m = *mh;
	m.msg_name = &px;
	m.msg_namelen = pl;
	return CALL(sendmsg)(fd, &m, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *sa, socklen_t *len) {
	ssize_t r = CALL(recvfrom)(fd, buf, n, flags, sa, len);
	if (r >= 0 && layer_on() && sa && len) rewrite_source(sa, len);
	return r;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *mh, int flags) {
	ssize_t r = CALL(recvmsg)(fd, mh, flags);
	if (r >= 0 && layer_on() && mh && mh->msg_name) rewrite_source(mh->msg_name, &mh->msg_namelen);
	return r;
}

EXPORT int getpeername(int fd, struct sockaddr *sa, socklen_t *len) {
	struct fdent *e = ent(fd);
	if (!layer_on() || !e || !e->kind || !e->peerlen || !sa || !len) return CALL(getpeername)(fd, sa, len);
	struct sockaddr_storage tmp;
	socklen_t tl = sizeof tmp;
	if (CALL(getpeername)(fd, (struct sockaddr *)&tmp, &tl) < 0) return -1; // ENOTCONN etc.
	socklen_t l = *len < e->peerlen ? *len : e->peerlen;
	memcpy(sa, &e->peer, l);
	*len = e->peerlen;
	return 0;
}

// ---- the client of a delivered connection -----------------------------
//
// mirrord delivers the target's incoming connections by connecting to the
// program's server on this machine's loopback, so the kernel's peer of an
// accepted connection is mirrord's end of it. accept, accept4 and
// getpeername show the target's client instead, which the proxy
// remembers for each of its deliveries (intproxy/peers.go; the netstack
// engine does the same in goshim/peers.go).
//
// Ordinary accepts stay cheap: the proxy is asked only when the peer is a
// loopback address and the listening socket is bound to a wildcard
// address (mirrord delivers only to those: a server on loopback gets no
// remote traffic, and one on another address is not reached through
// loopback). Other accepts cost nothing, or one getpeername when the
// caller asked for no address (libuv), and one getsockname of the
// listener when the peer is on loopback.

static int is_unspecified(const struct sockaddr *sa) {
	if (sa->sa_family == AF_INET) return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6) return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return 0;
}

// client_sockaddr builds the client ip:port in family: an IPv4 client of
// an IPv6 socket as v4-mapped, as the kernel shows it. 0 when family
// cannot hold it (an IPv6 client of an IPv4 socket: the kernel would never
// show one, so mirrord's address stays).
static socklen_t client_sockaddr(int family, const char *ip, uint16_t port, struct sockaddr_storage *out) {
	memset(out, 0, sizeof *out);
	struct in_addr a4;
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)out;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		if (inet_pton(AF_INET, ip, &a4) == 1) {
			in6->sin6_addr.s6_addr[10] = in6->sin6_addr.s6_addr[11] = 0xff;
			memcpy(&in6->sin6_addr.s6_addr[12], &a4, 4);
		} else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) != 1) {
			return 0;
		}
		return sizeof *in6;
	}
	if (family == AF_INET && inet_pton(AF_INET, ip, &a4) == 1) {
		struct sockaddr_in *in = (void *)out;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		in->sin_addr = a4;
		return sizeof *in;
	}
	return 0;
}

// original_peer runs after the real accept of listener lfd returned fd,
// whose peer the kernel wrote to sa (*len; cap is the caller's buffer
// size). When fd is a connection mirrord delivered, it remembers the
// target's client in fd's entry (for getpeername) and writes it to sa as
// accept would have.
static void original_peer(int lfd, int fd, struct sockaddr *sa, socklen_t *len, socklen_t cap) {
	forget(fd); // a number reused behind our back (a raw close) must not keep an old peer
	struct sockaddr_storage peer, ln;
	socklen_t pl = sizeof peer, ll = sizeof ln;
	if (sa && len && *len <= cap && *len >= sizeof(struct sockaddr_in)) {
		pl = *len < sizeof peer ? *len : sizeof peer;
		memcpy(&peer, sa, pl);
	} else if (CALL(getpeername)(fd, (struct sockaddr *)&peer, &pl) < 0) {
		return;
	}
	if ((peer.ss_family != AF_INET && peer.ss_family != AF_INET6) || !is_loopback((struct sockaddr *)&peer)) return;
	if (getsockname(lfd, (struct sockaddr *)&ln, &ll) < 0 || !is_unspecified((struct sockaddr *)&ln)) return;
	uint16_t port = ntohs(ln.ss_family == AF_INET ? ((struct sockaddr_in *)&ln)->sin_port
	                                              : ((struct sockaddr_in6 *)&ln)->sin6_port);
	char a[80], req[128], resp[128], ip[INET6_ADDRSTRLEN + 1];
	if (!addr_text((struct sockaddr *)&peer, pl, a, sizeof a)) return;
	int n = snprintf(req, sizeof req, "I\t%s\t%u\n", a, port);
	if (request(req, n, resp, sizeof resp, NULL) < 0 || resp[0] != 'A' || resp[1] != '\t') return;
	if (!field(resp, 1, ip, sizeof ip)) return;
	long cport = field_long(resp, 2);
	if (cport <= 0 || cport > 65535) return;
	struct fdent *e = ent_get(fd, 1);
	if (!e) return;
	socklen_t cl = client_sockaddr(peer.ss_family, ip, (uint16_t)cport, &e->peer);
	if (!cl) return;
	e->peerlen = cl;
	e->kind = FD_TCP;
	if (sa && len) {
		// accept's contract: at most the caller's buffer, the full length in *len.
		memcpy(sa, &e->peer, cap < cl ? cap : cl);
		*len = cl;
	}
}

EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags) {
	socklen_t cap = sa && len ? *len : 0;
	int r = CALL(accept4)(fd, sa, len, flags);
	if (r >= 0 && layer_on() && incoming_active) {
		int saved = errno;
		original_peer(fd, r, sa, len, cap);
		errno = saved;
	}
	return r;
}

EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len) {
	socklen_t cap = sa && len ? *len : 0;
	int r = CALL(accept)(fd, sa, len);
	if (r >= 0 && layer_on() && incoming_active) {
		int saved = errno;
		original_peer(fd, r, sa, len, cap);
		errno = saved;
	}
	return r;
}

// listen tells the proxy which port the program serves, so that the
// target's traffic for it can be mirrored or stolen.
EXPORT int listen(int fd, int backlog) {
	int r = CALL(listen)(fd, backlog);
	if (r == 0 && layer_on()) {
		struct sockaddr_storage ss;
		socklen_t l = sizeof ss;
		char a[80], req[128], resp[32];
		if (getsockname(fd, (struct sockaddr *)&ss, &l) == 0 && addr_text((struct sockaddr *)&ss, l, a, sizeof a)) {
			int n = snprintf(req, sizeof req, "P\t%s\n", a);
			request(req, n, resp, sizeof resp, NULL);
		}
	}
	return r;
}

static void forget(int fd) {
	struct fdent *e = ent(fd);
	if (e && (e->kind || e->udpport)) memset(e, 0, sizeof *e);
}

static void copy_ent(int from, int to) {
	struct fdent *a = ent(from), *b = ent(to);
	if (!a || !b) return; // no table: nothing to copy or clear
	if (a && (a->kind || a->udpport)) *b = *a;
	else if (b->kind || b->udpport) memset(b, 0, sizeof *b);
}

EXPORT int close(int fd) {
	forget(fd);
	return CALL(close)(fd);
}

EXPORT int dup(int fd) {
	int r = CALL(dup)(fd);
	if (r >= 0) copy_ent(fd, r);
	return r;
}

EXPORT int dup2(int fd, int to) {
	int r = CALL(dup2)(fd, to);
	if (r >= 0 && fd != to) copy_ent(fd, r);
	return r;
}

DECLARE_REAL(int, fcntl, int, int, ...)
DECLARE_REAL(int, fcntl64, int, int, ...)

// fcntl: F_DUPFD and F_DUPFD_CLOEXEC duplicate like dup. Every command's
// argument is an int, a long or a pointer, which the ABI passes alike in a
// register, so it is forwarded as a long... except the few taking a
// pointer, which a void* covers equally on the supported (LP64) targets.
#define FCNTL_HOOK(name)                                     \
	EXPORT int name(int fd, int cmd, ...) {                  \
		va_list ap;                                          \
		va_start(ap, cmd);                                   \
		long arg = va_arg(ap, long);                         \
		va_end(ap);                                          \
		int r = CALL(name)(fd, cmd, arg);                    \
		if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) copy_ent(fd, r); \
		return r;                                            \
	}

FCNTL_HOOK(fcntl)
FCNTL_HOOK(fcntl64)

EXPORT int dup3(int fd, int to, int flags) {
	int r = CALL(dup3)(fd, to, flags);
	if (r >= 0) copy_ent(fd, r);
	return r;
}

// ---- names -------------------------------------------------------------

// resolve asks the proxy for name's addresses. Returns the count (addrs
// filled), 0 to resolve locally, -1 for "no such host".
#define MAXADDRS 32
static int resolve(const char *name, struct sockaddr_storage *addrs) {
	char req[512], resp[4096], f[INET6_ADDRSTRLEN + 1];
	if (strlen(name) > 300 || strpbrk(name, "\t\n")) return 0;
	int n = snprintf(req, sizeof req, "G\t%s\n", name);
	if (request(req, n, resp, sizeof resp, NULL) < 0) return 0;
	if (resp[0] == 'E') return -1;
	if (resp[0] != 'A') return 0;
	int count = 0;
	for (int i = 1; count < MAXADDRS && field(resp, i, f, sizeof f); i++) {
		struct sockaddr_storage *ss = &addrs[count];
		memset(ss, 0, sizeof *ss);
		struct sockaddr_in *in = (void *)ss;
		struct sockaddr_in6 *in6 = (void *)ss;
		if (inet_pton(AF_INET, f, &in->sin_addr) == 1) {
			in->sin_family = AF_INET;
			count++;
		} else if (inet_pton(AF_INET6, f, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			count++;
		}
	}
	return count > 0 ? count : -1;
}

static int numeric_host(const char *node) {
	unsigned char b[16];
	return inet_pton(AF_INET, node, b) == 1 || inet_pton(AF_INET6, node, b) == 1;
}

EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
	if (!layer_on() || !node || numeric_host(node) || (hints && (hints->ai_flags & AI_NUMERICHOST)) ||
	    strcmp(node, "localhost") == 0)
		return CALL(getaddrinfo)(node, service, hints, res);
	int family = hints ? hints->ai_family : AF_UNSPEC;
	if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
		return CALL(getaddrinfo)(node, service, hints, res);
	// The port: let libc parse the service (numeric or /etc/services).
	uint16_t port = 0;
	if (service) {
		struct addrinfo h = {0}, *r = NULL;
		h.ai_flags = AI_NUMERICHOST;
		h.ai_family = AF_INET;
		if (hints) {
			h.ai_socktype = hints->ai_socktype;
			h.ai_protocol = hints->ai_protocol;
			h.ai_flags |= hints->ai_flags & AI_NUMERICSERV;
		}
		int e = CALL(getaddrinfo)("0.0.0.0", service, &h, &r);
		if (e) return e;
		port = ((struct sockaddr_in *)r->ai_addr)->sin_port;
		freeaddrinfo(r);
	}
	struct sockaddr_storage addrs[MAXADDRS];
	int n = resolve(node, addrs);
	if (n == 0) return CALL(getaddrinfo)(node, service, hints, res);
	if (n < 0) return EAI_NONAME;
	static const struct {
		int type, proto;
	} kinds[] = {{SOCK_STREAM, IPPROTO_TCP}, {SOCK_DGRAM, IPPROTO_UDP}, {SOCK_RAW, 0}};
	struct addrinfo *head = NULL, **tail = &head;
	for (int i = 0; i < n; i++) {
		int fam = addrs[i].ss_family;
		if (family != AF_UNSPEC && fam != family) continue;
		for (unsigned k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
			if (hints && hints->ai_socktype && hints->ai_socktype != kinds[k].type) continue;
			if (hints && hints->ai_protocol && hints->ai_protocol != kinds[k].proto) continue;
			if (!(hints && hints->ai_socktype) && kinds[k].type == SOCK_RAW && service) continue;
			size_t alen = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
			// glibc's freeaddrinfo frees each node and its canonname: the
			// address lives in the node's allocation, as glibc does it.
			struct addrinfo *ai = calloc(1, sizeof *ai + alen);
			if (!ai) {
				if (head) freeaddrinfo(head);
				return EAI_MEMORY;
			}
			ai->ai_family = fam;
			ai->ai_socktype = kinds[k].type;
			ai->ai_protocol = kinds[k].proto;
			ai->ai_addrlen = alen;
			ai->ai_addr = (struct sockaddr *)(ai + 1);
			memcpy(ai->ai_addr, &addrs[i], alen);
			if (fam == AF_INET) ((struct sockaddr_in *)ai->ai_addr)->sin_port = port;
			else ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = port;
			if (!head && hints && (hints->ai_flags & AI_CANONNAME)) ai->ai_canonname = strdup(node);
			*tail = ai;
			tail = &ai->ai_next;
		}
	}
	if (!head) return EAI_NONAME;
	*res = head;
	return 0;
}

// fill_hostent lays out a hostent for name's addresses of family af in
// buf. Returns 0, ERANGE if buf is too small, or -1 (with *herr set) when
// there is no such address.
static int fill_hostent(const char *name, int af, struct sockaddr_storage *addrs, int n, struct hostent *he,
                        char *buf, size_t buflen, int *herr) {
	size_t alen = af == AF_INET ? 4 : 16;
	int k = 0;
	for (int i = 0; i < n; i++)
		if (addrs[i].ss_family == af) k++;
	if (k == 0) {
		*herr = NO_ADDRESS;
		return -1;
	}
	size_t nlen = strlen(name) + 1;
	// Pointers first (aligned), then addresses, then the name.
	size_t need = sizeof(char *) * (k + 2) + alen * k + nlen;
	if (buflen < need) return ERANGE;
	char **aliases = (char **)buf;
	char **list = aliases + 1;
	char *data = (char *)(list + k + 1);
	aliases[0] = NULL;
	int j = 0;
	for (int i = 0; i < n; i++) {
		if (addrs[i].ss_family != af) continue;
		const void *src = af == AF_INET ? (const void *)&((struct sockaddr_in *)&addrs[i])->sin_addr
		                                : (const void *)&((struct sockaddr_in6 *)&addrs[i])->sin6_addr;
		memcpy(data + alen * j, src, alen);
		list[j] = data + alen * j;
		j++;
	}
	list[k] = NULL;
	char *nm = data + alen * k;
	memcpy(nm, name, nlen);
	he->h_name = nm;
	he->h_aliases = aliases;
	he->h_addrtype = af;
	he->h_length = alen;
	he->h_addr_list = list;
	return 0;
}

// remote_hostent resolves name for the gethostbyname family. Returns 0
// (filled), -2 to resolve locally, ERANGE, or -1 with *herr set.
static int remote_hostent(const char *name, int af, struct hostent *he, char *buf, size_t buflen, int *herr) {
	if (!layer_on() || !name || numeric_host(name) || strcmp(name, "localhost") == 0 || (af != AF_INET && af != AF_INET6))
		return -2;
	struct sockaddr_storage addrs[MAXADDRS];
	int n = resolve(name, addrs);
	if (n == 0) return -2;
	if (n < 0) {
		*herr = HOST_NOT_FOUND;
		return -1;
	}
	return fill_hostent(name, af, addrs, n, he, buf, buflen, herr);
}

DECLARE_REAL(struct hostent *, gethostbyname2, const char *, int)
DECLARE_REAL(int, gethostbyname_r, const char *, struct hostent *, char *, size_t, struct hostent **, int *)
DECLARE_REAL(int, gethostbyname2_r, const char *, int, struct hostent *, char *, size_t, struct hostent **, int *)

EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *he, char *buf, size_t buflen,
                            struct hostent **result, int *herr) {
	int r = remote_hostent(name, af, he, buf, buflen, herr);
	if (r == -2) return CALL(gethostbyname2_r)(name, af, he, buf, buflen, result, herr);
	*result = r == 0 ? he : NULL;
	if (r == ERANGE) {
		*herr = NETDB_INTERNAL;
		return ERANGE;
	}
	return 0; // "not found" is *result == NULL with *herr set, as glibc does
}

EXPORT int gethostbyname_r(const char *name, struct hostent *he, char *buf, size_t buflen, struct hostent **result,
                           int *herr) {
	int r = remote_hostent(name, AF_INET, he, buf, buflen, herr);
	if (r == -2) return CALL(gethostbyname_r)(name, he, buf, buflen, result, herr);
	*result = r == 0 ? he : NULL;
	if (r == ERANGE) {
		*herr = NETDB_INTERNAL;
		return ERANGE;
	}
	return 0;
}

// The non-reentrant forms use static storage, as libc's do.
static struct hostent static_he;
static char static_hebuf[sizeof(char *) * (MAXADDRS + 2) + 16 * MAXADDRS + 1024];

EXPORT struct hostent *gethostbyname2(const char *name, int af) {
	int herr = 0;
	int r = remote_hostent(name, af, &static_he, static_hebuf, sizeof static_hebuf, &herr);
	if (r == -2) return CALL(gethostbyname2)(name, af);
	if (r != 0) {
		h_errno = r == ERANGE ? NO_RECOVERY : herr;
		return NULL;
	}
	return &static_he;
}

EXPORT struct hostent *gethostbyname(const char *name) {
	int herr = 0;
	int r = remote_hostent(name, AF_INET, &static_he, static_hebuf, sizeof static_hebuf, &herr);
	if (r == -2) return CALL(gethostbyname)(name);
	if (r != 0) {
		h_errno = r == ERANGE ? NO_RECOVERY : herr;
		return NULL;
	}
	return &static_he;
}

EXPORT int gethostname(char *buf, size_t len) {
	if (!layer_on() || !fake_hostname[0]) return CALL(gethostname)(buf, len);
	size_t n = strlen(fake_hostname);
	if (n + 1 > len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, fake_hostname, n + 1);
	return 0;
}

EXPORT int uname(struct utsname *u) {
	int r = CALL(uname)(u);
	if (r == 0 && layer_on() && fake_hostname[0]) snprintf(u->nodename, sizeof u->nodename, "%s", fake_hostname);
	return r;
}

// ---- files -------------------------------------------------------------

// abspath makes path absolute against dirfd (AT_FDCWD: the working
// directory). Returns 0 if it cannot (the call then stays local).
static int abspath(int dirfd, const char *path, char *out, size_t cap) {
	if (!path || !*path || strlen(path) >= PATH_MAX || strpbrk(path, "\t\n")) return 0;
	if (path[0] == '/') {
		snprintf(out, cap, "%s", path);
		return 1;
	}
	char base[PATH_MAX];
	if (dirfd == AT_FDCWD) {
		if (!getcwd(base, sizeof base)) return 0;
	} else {
		char link[64];
		snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
		ssize_t n = syscall(SYS_readlinkat, AT_FDCWD, link, base, sizeof base - 1);
		if (n <= 0 || base[0] != '/') return 0;
		base[n] = 0;
	}
	return snprintf(out, cap, "%s/%s", strcmp(base, "/") == 0 ? "" : base, path) < (int)cap;
}

// remote_open asks the proxy to open path. Returns the fd, -1 with errno
// for a remote failure, or -2 to open locally.
static int remote_open(int dirfd, const char *path, int flags, mode_t mode) {
	char abs[PATH_MAX], req[PATH_MAX + 64], resp[64];
	if (!layer_on() || !files_active || !abspath(dirfd, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "O\t%d\t%o\t%s\n", flags, (unsigned)mode, abs);
	int fd;
	if (request(req, n, resp, sizeof resp, &fd) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	if (resp[0] != 'F' || fd < 0) return -2;
	if (!(flags & O_CLOEXEC)) fcntl(fd, F_SETFD, 0);
	return fd;
}

#define OPEN_MODE(flags, mode)                                 \
	do {                                                       \
		if ((flags) & (O_CREAT | __O_TMPFILE)) {               \
			va_list ap;                                        \
			va_start(ap, flags);                               \
			mode = va_arg(ap, int);                            \
			va_end(ap);                                        \
		}                                                      \
	} while (0)

EXPORT int open(const char *path, int flags, ...) {
	mode_t mode = 0;
	OPEN_MODE(flags, mode);
	int r = remote_open(AT_FDCWD, path, flags, mode);
	return r != -2 ? r : CALL(open)(path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...) {
	mode_t mode = 0;
	OPEN_MODE(flags, mode);
	int r = remote_open(AT_FDCWD, path, flags, mode);
	return r != -2 ? r : CALL(open64)(path, flags, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...) {
	mode_t mode = 0;
	OPEN_MODE(flags, mode);
	int r = remote_open(dirfd, path, flags, mode);
	return r != -2 ? r : CALL(openat)(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
	mode_t mode = 0;
	OPEN_MODE(flags, mode);
	int r = remote_open(dirfd, path, flags, mode);
	return r != -2 ? r : CALL(openat64)(dirfd, path, flags, mode);
}

// The _FORTIFY_SOURCE variants that programs built with it call.
EXPORT int __open_2(const char *path, int flags) {
	int r = remote_open(AT_FDCWD, path, flags, 0);
	return r != -2 ? r : CALL(__open_2)(path, flags);
}

EXPORT int __open64_2(const char *path, int flags) {
	int r = remote_open(AT_FDCWD, path, flags, 0);
	return r != -2 ? r : CALL(__open64_2)(path, flags);
}

EXPORT int __openat_2(int dirfd, const char *path, int flags) {
	int r = remote_open(dirfd, path, flags, 0);
	return r != -2 ? r : CALL(__openat_2)(dirfd, path, flags);
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags) {
	int r = remote_open(dirfd, path, flags, 0);
	return r != -2 ? r : CALL(__openat64_2)(dirfd, path, flags);
}

static int fopen_flags(const char *m) {
	int flags;
	switch (m[0]) {
	case 'r': flags = 0; break;
	case 'w': flags = O_CREAT | O_TRUNC; break;
	case 'a': flags = O_CREAT | O_APPEND; break;
	default: return -1;
	}
	int rw = 0;
	for (const char *p = m + 1; *p && *p != ','; p++) {
		if (*p == '+') rw = 1;
		else if (*p == 'e') flags |= O_CLOEXEC;
		else if (*p == 'x') flags |= O_EXCL;
	}
	if (rw) flags |= O_RDWR;
	else if (m[0] != 'r') flags |= O_WRONLY;
	return flags;
}

static FILE *remote_fopen(const char *path, const char *mode, int *local) {
	*local = 1;
	int flags = mode ? fopen_flags(mode) : -1;
	if (flags < 0) return NULL;
	int fd = remote_open(AT_FDCWD, path, flags, 0666);
	if (fd == -2) return NULL;
	*local = 0;
	if (fd < 0) return NULL;
	FILE *f = fdopen(fd, mode);
	if (!f) {
		int e = errno;
		CALL(close)(fd);
		errno = e;
	}
	return f;
}

EXPORT FILE *fopen(const char *path, const char *mode) {
	int local;
	FILE *f = remote_fopen(path, mode, &local);
	return local ? CALL(fopen)(path, mode) : f;
}

EXPORT FILE *fopen64(const char *path, const char *mode) {
	int local;
	FILE *f = remote_fopen(path, mode, &local);
	return local ? CALL(fopen64)(path, mode) : f;
}

// opendir: glibc opens the directory internally (not through open), so
// it is hooked itself. The proxy hands over a directory that mirrors the
// remote one's entries.
EXPORT DIR *opendir(const char *path) {
	int fd = remote_open(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (fd == -2) return CALL(opendir)(path);
	if (fd < 0) return NULL;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		CALL(close)(fd);
		errno = e;
	}
	return d;
}

// ---- working directory ----------------------------------------------------
// chdir into a directory the rules send to the target: the proxy opens it
// in the FUSE view and the process fchdirs to that fd, so relative paths
// then resolve in the view (the target's files) in the kernel itself, and
// children inherit the directory. fchdir of a remote directory's fd needs
// no hook: the fd is already the view's.

DECLARE_REAL(int, chdir, const char *)
DECLARE_REAL(char *, getcwd, char *, size_t)
DECLARE_REAL(char *, get_current_dir_name, void)

// remote_chdir returns 0, -1 with errno, or -2 to chdir locally. Without
// the view (no FUSE) the proxy answers EOPNOTSUPP rather than leave the
// process in a local directory of the same name.
static int remote_chdir(const char *path) {
	char abs[PATH_MAX], req[PATH_MAX + 16], resp[64];
	if (!layer_on() || !files_active || !abspath(AT_FDCWD, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "CD\t%s\n", abs);
	int fd = -1;
	if (n >= (int)sizeof req || request(req, n, resp, sizeof resp, &fd) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	if (resp[0] != 'F' || fd < 0) return -2;
	int r = fchdir(fd);
	e = errno;
	CALL(close)(fd);
	errno = e;
	return r;
}

EXPORT int chdir(const char *path) {
	int r = remote_chdir(path);
	return r == -2 ? CALL(chdir)(path) : r;
}

// view_cwd writes the working directory into out when it is in the FUSE
// view. The view is a mount attached nowhere, so the kernel's getcwd says
// "(unreachable)/app/src" and glibc's getcwd fails with ENOENT; the path
// after the prefix is the target's path. An unreachable FUSE directory in
// a layered process is the view (nothing else mounts FUSE detached).
static int view_cwd(char *out, size_t cap) {
	static const char prefix[] = "(unreachable)/";
	char k[PATH_MAX + sizeof prefix];
	long n = syscall(SYS_getcwd, k, sizeof k);
	struct statfs fs;
	// The raw statfs: the hooked one makes "." absolute with getcwd.
	if (n <= 0 || strncmp(k, prefix, sizeof prefix - 1) != 0 || syscall(SYS_statfs, ".", &fs) != 0 ||
	    fs.f_type != FUSE_SUPER_MAGIC)
		return 0;
	const char *p = k + sizeof prefix - 2; // keep the slash
	if (strlen(p) >= cap) return 0;
	memcpy(out, p, strlen(p) + 1);
	return 1;
}

// getcwd keeps glibc's contract: buf NULL allocates (size bytes, or as
// many as needed when size is 0), a short buffer is ERANGE.
EXPORT char *getcwd(char *buf, size_t size) {
	int e = errno;
	char *r = CALL(getcwd)(buf, size);
	char path[PATH_MAX];
	if (r || errno != ENOENT || !layer_on() || !files_active || !view_cwd(path, sizeof path)) return r;
	size_t len = strlen(path) + 1;
	if (size && size < len) {
		errno = ERANGE;
		return NULL;
	}
	if (!buf && !(buf = malloc(size ? size : len))) return NULL;
	memcpy(buf, path, len);
	errno = e;
	return buf;
}

EXPORT char *getwd(char *buf) {
	if (!getcwd(buf, PATH_MAX)) {
		snprintf(buf, PATH_MAX, "%s", strerror(errno));
		return NULL;
	}
	return buf;
}

// get_current_dir_name calls glibc's internal getcwd, not the hook.
EXPORT char *get_current_dir_name(void) {
	char *r = CALL(get_current_dir_name)();
	return r || errno != ENOENT ? r : getcwd(NULL, 0);
}

// remote_stat asks the proxy about path. Returns 0 and fills the fields,
// -1 with errno, or -2 to stat locally. blocks, blksize, rdev and btime
// are the target's (mask: statx's result mask from the target's kernel;
// STATX_BTIME says there is a birth time).
struct rstat {
	long long mode, size, mtime, atime, ctime, nlink, uid, gid, blocks, blksize, btime;
	unsigned long long ino, dev, rdev;
	unsigned mask;
};

static int remote_stat(int dirfd, const char *path, int follow, struct rstat *st) {
	char abs[PATH_MAX], req[PATH_MAX + 32], resp[512];
	if (!layer_on() || !files_active || !abspath(dirfd, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "S\t%d\t%s\n", follow, abs);
	if (request(req, n, resp, sizeof resp, NULL) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	if (resp[0] != 'I') return -2;
	st->mode = field_ll(resp, 1);
	st->size = field_ll(resp, 2);
	st->mtime = field_ll(resp, 3);
	st->atime = field_ll(resp, 4);
	st->ctime = field_ll(resp, 5);
	st->ino = field_ull(resp, 6);
	st->dev = field_ull(resp, 7);
	st->nlink = field_ll(resp, 8);
	st->uid = field_ll(resp, 9);
	st->gid = field_ll(resp, 10);
	st->blocks = field_ll(resp, 11);
	st->blksize = field_ll(resp, 12);
	st->rdev = field_ull(resp, 13);
	st->btime = field_ll(resp, 14);
	st->mask = (unsigned)field_ull(resp, 15);
	return 0;
}

#define FILL_STAT(buf, r)                                   \
	do {                                                    \
		memset(buf, 0, sizeof *(buf));                      \
		(buf)->st_mode = (r).mode;                          \
		(buf)->st_size = (r).size;                          \
		(buf)->st_ino = (r).ino;                            \
		(buf)->st_dev = (r).dev;                            \
		(buf)->st_rdev = (r).rdev;                          \
		(buf)->st_nlink = (r).nlink;                        \
		(buf)->st_uid = (r).uid;                            \
		(buf)->st_gid = (r).gid;                            \
		(buf)->st_blksize = (r).blksize;                    \
		(buf)->st_blocks = (r).blocks;                      \
		(buf)->st_mtim.tv_sec = (r).mtime / 1000000000LL;   \
		(buf)->st_mtim.tv_nsec = (r).mtime % 1000000000LL;  \
		(buf)->st_atim.tv_sec = (r).atime / 1000000000LL;   \
		(buf)->st_atim.tv_nsec = (r).atime % 1000000000LL;  \
		(buf)->st_ctim.tv_sec = (r).ctime / 1000000000LL;   \
		(buf)->st_ctim.tv_nsec = (r).ctime % 1000000000LL;  \
	} while (0)

#define STAT_HOOK(name, type, follow)                              \
	EXPORT int name(const char *path, struct type *buf) {          \
		struct rstat r;                                            \
		int x = remote_stat(AT_FDCWD, path, follow, &r);           \
		if (x == -2) return CALL(name)(path, buf);                 \
		if (x < 0) return -1;                                      \
		FILL_STAT(buf, r);                                         \
		return 0;                                                  \
	}

STAT_HOOK(stat, stat, 1)
STAT_HOOK(lstat, stat, 0)
STAT_HOOK(stat64, stat64, 1)
STAT_HOOK(lstat64, stat64, 0)

#define XSTAT_HOOK(name, type, follow)                             \
	EXPORT int name(int ver, const char *path, struct type *buf) { \
		struct rstat r;                                            \
		int x = remote_stat(AT_FDCWD, path, follow, &r);           \
		if (x == -2) return CALL(name)(ver, path, buf);            \
		if (x < 0) return -1;                                      \
		FILL_STAT(buf, r);                                         \
		return 0;                                                  \
	}

XSTAT_HOOK(__xstat, stat, 1)
XSTAT_HOOK(__lxstat, stat, 0)
XSTAT_HOOK(__xstat64, stat64, 1)
XSTAT_HOOK(__lxstat64, stat64, 0)

// fstatat with an empty path and AT_EMPTY_PATH is fstat of dirfd: local.
#define FSTATAT_HOOK(name, type)                                                   \
	EXPORT int name(int dirfd, const char *path, struct type *buf, int flags) {    \
		struct rstat r;                                                            \
		int x = (path && *path) ? remote_stat(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), &r) : -2; \
		if (x == -2) return CALL(name)(dirfd, path, buf, flags);                   \
		if (x < 0) return -1;                                                      \
		FILL_STAT(buf, r);                                                         \
		return 0;                                                                  \
	}

FSTATAT_HOOK(fstatat, stat)
FSTATAT_HOOK(fstatat64, stat64)

#define FXSTATAT_HOOK(name, type)                                                          \
	EXPORT int name(int ver, int dirfd, const char *path, struct type *buf, int flags) {   \
		struct rstat r;                                                                    \
		int x = (path && *path) ? remote_stat(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), &r) : -2; \
		if (x == -2) return CALL(name)(ver, dirfd, path, buf, flags);                      \
		if (x < 0) return -1;                                                              \
		FILL_STAT(buf, r);                                                                 \
		return 0;                                                                          \
	}

FXSTATAT_HOOK(__fxstatat, stat)
FXSTATAT_HOOK(__fxstatat64, stat64)

static void statx_time(struct statx_timestamp *t, long long ns) {
	t->tv_sec = ns / 1000000000LL;
	t->tv_nsec = ns % 1000000000LL;
}

// statx: the target's fields, and in stx_mask which ones its kernel gave
// (the basic ones, and STATX_BTIME where its file system keeps a birth
// time), whatever the program asked for, as the kernel may. Every answer
// is fresh from the target, which is what AT_STATX_FORCE_SYNC asks and
// AT_STATX_DONT_SYNC allows. A bad mask or flag combination is left to
// the kernel's EINVAL; so is an empty path (the fd itself).
EXPORT int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *buf) {
	struct rstat r;
	int bad = (mask & STATX__RESERVED) || (flags & AT_STATX_SYNC_TYPE) == AT_STATX_SYNC_TYPE;
	int x = (path && *path && !bad) ? remote_stat(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), &r) : -2;
	if (x == -2) return CALL(statx)(dirfd, path, flags, mask, buf);
	if (x < 0) return -1;
	memset(buf, 0, sizeof *buf);
	buf->stx_mask = r.mask & (STATX_BASIC_STATS | STATX_BTIME);
	buf->stx_mode = r.mode;
	buf->stx_size = r.size;
	buf->stx_ino = r.ino;
	buf->stx_nlink = r.nlink;
	buf->stx_uid = r.uid;
	buf->stx_gid = r.gid;
	buf->stx_blksize = r.blksize;
	buf->stx_blocks = r.blocks;
	buf->stx_dev_major = major(r.dev);
	buf->stx_dev_minor = minor(r.dev);
	buf->stx_rdev_major = major(r.rdev);
	buf->stx_rdev_minor = minor(r.rdev);
	statx_time(&buf->stx_mtime, r.mtime);
	statx_time(&buf->stx_atime, r.atime);
	statx_time(&buf->stx_ctime, r.ctime);
	if (r.mask & STATX_BTIME) statx_time(&buf->stx_btime, r.btime);
	return 0;
}

// access, faccessat (faccessat2's flags included), eaccess, euidaccess:
// the target's agent checks the path for itself, since it is who opens the
// target's files for the program (root in the target's container), so
// access says yes exactly where the program's open would succeed: read and
// write unless the target's mount is read-only (EROFS), execute when a
// bit allows it. A bad mode or flag goes to libc for its EINVAL, an empty
// path with AT_EMPTY_PATH (the fd itself) too.
static int remote_access(int dirfd, const char *path, int amode, int flags) {
	char abs[PATH_MAX], req[PATH_MAX + 32], resp[64];
	if ((amode & ~(R_OK | W_OK | X_OK)) || (flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)) || !path ||
	    !*path || !layer_on() || !files_active || !abspath(dirfd, path, abs, sizeof abs))
		return -2;
	int n = snprintf(req, sizeof req, "AX\t%d\t%d\t%s\n", !(flags & AT_SYMLINK_NOFOLLOW), amode, abs);
	if (n >= (int)sizeof req || request(req, n, resp, sizeof resp, NULL) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	return strcmp(resp, "OK") == 0 ? 0 : -2;
}

EXPORT int access(const char *path, int amode) {
	int x = remote_access(AT_FDCWD, path, amode, 0);
	return x == -2 ? CALL(access)(path, amode) : x;
}

EXPORT int faccessat(int dirfd, const char *path, int amode, int flags) {
	int x = remote_access(dirfd, path, amode, flags);
	return x == -2 ? CALL(faccessat)(dirfd, path, amode, flags) : x;
}

// eaccess and euidaccess reach faccessat inside libc, past the hook.
EXPORT int eaccess(const char *path, int amode) {
	int x = remote_access(AT_FDCWD, path, amode, AT_EACCESS);
	return x == -2 ? CALL(eaccess)(path, amode) : x;
}

EXPORT int euidaccess(const char *path, int amode) {
	int x = remote_access(AT_FDCWD, path, amode, AT_EACCESS);
	return x == -2 ? CALL(euidaccess)(path, amode) : x;
}

static ssize_t remote_readlink(int dirfd, const char *path, char *buf, size_t len) {
	char abs[PATH_MAX], req[PATH_MAX + 8], resp[PATH_MAX + 8];
	if (!layer_on() || !files_active || !abspath(dirfd, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "K\t%s\n", abs);
	int rl = request(req, n, resp, sizeof resp, NULL);
	if (rl < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	if (resp[0] != 'T' || resp[1] != '\t') return -2;
	size_t tl = rl - 2;
	if (tl > len) tl = len;
	memcpy(buf, resp + 2, tl);
	return tl;
}

EXPORT ssize_t readlink(const char *path, char *buf, size_t len) {
	ssize_t r = remote_readlink(AT_FDCWD, path, buf, len);
	return r == -2 ? CALL(readlink)(path, buf, len) : r;
}

EXPORT ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t len) {
	ssize_t r = remote_readlink(dirfd, path, buf, len);
	return r == -2 ? CALL(readlinkat)(dirfd, path, buf, len) : r;
}

// ---- extended attributes and statfs ------------------------------------
// ls -l asks for a file's SELinux label and ACL (lgetxattr, getxattr), df
// and stat -f for its file system (statfs): a remote path must get the
// target's answer, never this machine's ENOENT. Calls on a remote fd need
// no hook: a FUSE-view fd answers them from the target by itself.

#define XATTR_REPLY_CAP (2 * 65536 + 64) // a value of up to 64 KiB, in hex

static int hexval(char c) {
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

// remote_xattr reads (list == 0) or lists the extended attributes of
// path with getxattr/listxattr's contract: size 0 asks for the length.
// Returns -2 to do it locally.
static ssize_t remote_xattr(int list, int follow, const char *path, const char *name, void *value, size_t size) {
	char abs[PATH_MAX];
	if (!layer_on() || !files_active || !path || (!list && !name) || !abspath(AT_FDCWD, path, abs, sizeof abs)) return -2;
	size_t reqcap = PATH_MAX + 512;
	char *req = malloc(reqcap), *resp = malloc(XATTR_REPLY_CAP);
	ssize_t ret = -2;
	if (!req || !resp) goto out;
	int n = snprintf(req, reqcap, "%c\t%d\t%s\t%s\n", list ? 'Y' : 'X', follow, list ? "" : name, abs);
	if (n < 0 || (size_t)n >= reqcap) goto out;
	int rl = request(req, n, resp, XATTR_REPLY_CAP, NULL);
	if (rl < 0) goto out;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		ret = -1;
		goto out;
	}
	if (rl < 2 || resp[0] != 'V' || resp[1] != '\t') goto out;
	size_t len = (size_t)(rl - 2) / 2;
	if (size == 0) {
		ret = len;
		goto out;
	}
	if (len > size) {
		errno = ERANGE;
		ret = -1;
		goto out;
	}
	unsigned char *out = value;
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(resp[2 + 2 * i]), lo = hexval(resp[3 + 2 * i]);
		if (hi < 0 || lo < 0) goto out;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	ret = len;
out:
	free(req);
	free(resp);
	return ret;
}

DECLARE_REAL(ssize_t, getxattr, const char *, const char *, void *, size_t)
DECLARE_REAL(ssize_t, lgetxattr, const char *, const char *, void *, size_t)
DECLARE_REAL(ssize_t, listxattr, const char *, char *, size_t)
DECLARE_REAL(ssize_t, llistxattr, const char *, char *, size_t)

EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size) {
	ssize_t r = remote_xattr(0, 1, path, name, value, size);
	return r == -2 ? CALL(getxattr)(path, name, value, size) : r;
}

EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size) {
	ssize_t r = remote_xattr(0, 0, path, name, value, size);
	return r == -2 ? CALL(lgetxattr)(path, name, value, size) : r;
}

EXPORT ssize_t listxattr(const char *path, char *list, size_t size) {
	ssize_t r = remote_xattr(1, 1, path, NULL, list, size);
	return r == -2 ? CALL(listxattr)(path, list, size) : r;
}

EXPORT ssize_t llistxattr(const char *path, char *list, size_t size) {
	ssize_t r = remote_xattr(1, 0, path, NULL, list, size);
	return r == -2 ? CALL(llistxattr)(path, list, size) : r;
}

// remote_statfs fills buf (a struct statfs or statfs64: the same layout
// on 64-bit Linux) for a remote path; -2 to do it locally.
static int remote_statfs(const char *path, struct statfs *buf) {
	char abs[PATH_MAX], req[PATH_MAX + 8], resp[512];
	if (!layer_on() || !files_active || !path || !abspath(AT_FDCWD, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "Q\t%s\n", abs);
	if (n < 0 || n >= (int)sizeof req || request(req, n, resp, sizeof resp, NULL) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	if (resp[0] != 'Q') return -2;
	memset(buf, 0, sizeof *buf);
	buf->f_type = field_ll(resp, 1);
	buf->f_bsize = field_ll(resp, 2);
	buf->f_blocks = field_ull(resp, 3);
	buf->f_bfree = field_ull(resp, 4);
	buf->f_bavail = field_ull(resp, 5);
	buf->f_files = field_ull(resp, 6);
	buf->f_ffree = field_ull(resp, 7);
	int fsid[2] = {(int)field_ll(resp, 8), (int)field_ll(resp, 9)};
	memcpy(&buf->f_fsid, fsid, sizeof fsid);
	buf->f_namelen = field_ll(resp, 10);
	buf->f_frsize = field_ll(resp, 11);
	buf->f_flags = field_ll(resp, 12);
	return 0;
}

// statvfs is glibc's statfs with the flags in ST_* form (the same bits).
static void to_statvfs(const struct statfs *s, struct statvfs *v) {
	memset(v, 0, sizeof *v);
	v->f_bsize = s->f_bsize;
	v->f_frsize = s->f_frsize ? s->f_frsize : s->f_bsize;
	v->f_blocks = s->f_blocks;
	v->f_bfree = s->f_bfree;
	v->f_bavail = s->f_bavail;
	v->f_files = s->f_files;
	v->f_ffree = s->f_ffree;
	v->f_favail = s->f_ffree;
	unsigned int fsid[2];
	memcpy(fsid, &s->f_fsid, sizeof fsid);
	v->f_fsid = fsid[0] | (unsigned long)fsid[1] << 32;
	v->f_flag = s->f_flags & ~0x20; // ST_VALID: the kernel's "f_flags is set", not a mount flag
	v->f_namemax = s->f_namelen;
}

DECLARE_REAL(int, statfs, const char *, struct statfs *)
DECLARE_REAL(int, statfs64, const char *, struct statfs64 *)
DECLARE_REAL(int, statvfs, const char *, struct statvfs *)
DECLARE_REAL(int, statvfs64, const char *, struct statvfs64 *)

EXPORT int statfs(const char *path, struct statfs *buf) {
	int r = remote_statfs(path, buf);
	return r == -2 ? CALL(statfs)(path, buf) : r;
}

EXPORT int statfs64(const char *path, struct statfs64 *buf) {
	int r = remote_statfs(path, (struct statfs *)buf);
	return r == -2 ? CALL(statfs64)(path, buf) : r;
}

EXPORT int statvfs(const char *path, struct statvfs *buf) {
	struct statfs s;
	int r = remote_statfs(path, &s);
	if (r == -2) return CALL(statvfs)(path, buf);
	if (r == 0) to_statvfs(&s, buf);
	return r;
}

EXPORT int statvfs64(const char *path, struct statvfs64 *buf) {
	struct statfs s;
	int r = remote_statfs(path, &s);
	if (r == -2) return CALL(statvfs64)(path, buf);
	if (r == 0) to_statvfs(&s, (struct statvfs *)buf);
	return r;
}

// ---- glibc's resolver API ----------------------------------------------
// res_query and its kin send their queries with glibc's internal socket
// calls, which the connect/sendto hooks never see, so they are answered
// here from the target's DNS (search domains and ndots included for
// res_search). Tools with a resolver of their own (host, dig) send
// through the hooked calls and need nothing of this.

#define DNS_REPLY_CAP (2 * 65536 + 64) // a DNS message of up to 64 KiB, in hex

// dns_reply copies the proxy's "A\t<rcode>\t<ancount>\t<hex>" answer into
// answer (at most anslen bytes) and returns its length, or -1 with
// h_errno as glibc sets it when the lookup found nothing.
static int dns_reply(const char *resp, int rl, unsigned char *answer, int anslen) {
	int rcode = (int)field_long(resp, 1), ancount = (int)field_long(resp, 2);
	const char *hx = resp;
	for (int i = 0; i < 3 && hx; i++) {
		hx = strchr(hx, '\t');
		if (hx) hx++;
	}
	if (!hx) {
		h_errno = NO_RECOVERY;
		return -1;
	}
	int len = (int)((rl - (hx - resp)) / 2);
	int n = len < anslen ? len : anslen;
	for (int i = 0; i < n; i++) {
		int hi = hexval(hx[2 * i]), lo = hexval(hx[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			h_errno = NO_RECOVERY;
			return -1;
		}
		answer[i] = (unsigned char)(hi << 4 | lo);
	}
	if (rcode != 0 || ancount == 0) {
		h_errno = rcode == 3 ? HOST_NOT_FOUND : rcode == 2 ? TRY_AGAIN : rcode == 0 ? NO_DATA : NO_RECOVERY;
		return -1;
	}
	return n;
}

// remote_res runs a request and decodes its answer; -2: do it locally.
static int remote_res(const char *req, int n, unsigned char *answer, int anslen) {
	if (n < 0) return -2;
	char *resp = malloc(DNS_REPLY_CAP);
	if (!resp) return -2;
	int r = -2, rl = request(req, n, resp, DNS_REPLY_CAP, NULL);
	if (rl >= 0 && resp[0] == 'A' && resp[1] == '\t') {
		r = dns_reply(resp, rl, answer, anslen);
	} else if (rl >= 0 && reply_errno(resp)) {
		h_errno = TRY_AGAIN;
		r = -1;
	}
	free(resp);
	return r;
}

// remote_query: mode 'q' for res_query, 's' for res_search.
static int remote_query(char mode, const char *name, int class, int type, unsigned char *answer, int anslen) {
	char req[NS_MAXDNAME + 64];
	if (!layer_on() || !name || !*name || !answer || anslen < 0) return -2;
	int n = snprintf(req, sizeof req, "R\t%c\t%d\t%d\t%s\n", mode, class, type, name);
	if (n >= (int)sizeof req) return -2;
	return remote_res(req, n, answer, anslen);
}

static int remote_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
	if (!layer_on() || !msg || msglen <= 0 || msglen > 65535 || !answer || anslen < 0) return -2;
	char *req = malloc(2 * msglen + 8);
	if (!req) return -2;
	int n = 0;
	req[n++] = 'Z';
	req[n++] = '\t';
	for (int i = 0; i < msglen; i++) n += sprintf(req + n, "%02x", msg[i]);
	req[n++] = '\n';
	int r = remote_res(req, n, answer, anslen);
	free(req);
	return r;
}

// joined is res_querydomain's name: name.domain (domain may be NULL).
static const char *joined(const char *name, const char *domain, char *buf, size_t cap) {
	if (!domain) return name;
	int n = snprintf(buf, cap, "%s.%s", name, domain);
	return n > 0 && (size_t)n < cap ? buf : NULL;
}

// Each hook has two names: res_query@GLIBC_2.34 and the older
// __res_query that programs built against glibc < 2.34 call.
#define RES_HOOKS(name, nname, mode)                                                                          \
	DECLARE_REAL(int, name, const char *, int, int, unsigned char *, int)                              \
	DECLARE_REAL(int, __##name, const char *, int, int, unsigned char *, int)                          \
	DECLARE_REAL(int, nname, res_state, const char *, int, int, unsigned char *, int)                \
	DECLARE_REAL(int, __##nname, res_state, const char *, int, int, unsigned char *, int)              \
	EXPORT int name(const char *dname, int class, int type, unsigned char *answer, int anslen) {       \
		int r = remote_query(mode, dname, class, type, answer, anslen);                                \
		return r == -2 ? CALL(name)(dname, class, type, answer, anslen) : r;                           \
	}                                                                                                  \
	EXPORT int __##name(const char *dname, int class, int type, unsigned char *answer, int anslen) {   \
		int r = remote_query(mode, dname, class, type, answer, anslen);                                \
		return r == -2 ? CALL(__##name)(dname, class, type, answer, anslen) : r;                       \
	}                                                                                                  \
	EXPORT int nname(res_state st, const char *dname, int class, int type, unsigned char *answer,    \
	                   int anslen) {                                                                   \
		int r = remote_query(mode, dname, class, type, answer, anslen);                                \
		if (r == -2) return CALL(nname)(st, dname, class, type, answer, anslen);                     \
		if (r < 0 && st) st->res_h_errno = h_errno;                                                    \
		return r;                                                                                      \
	}                                                                                                  \
	EXPORT int __##nname(res_state st, const char *dname, int class, int type, unsigned char *answer,  \
	                     int anslen) {                                                                 \
		int r = remote_query(mode, dname, class, type, answer, anslen);                                \
		if (r == -2) return CALL(__##nname)(st, dname, class, type, answer, anslen);                   \
		if (r < 0 && st) st->res_h_errno = h_errno;                                                    \
		return r;                                                                                      \
	}

#undef res_query
#undef res_search
#undef res_nquery
#undef res_nsearch
#undef res_querydomain
#undef res_nquerydomain
#undef res_send
#undef res_nsend
RES_HOOKS(res_query, res_nquery, 'q')
RES_HOOKS(res_search, res_nsearch, 's')

#define RES_DOMAIN_HOOKS(name, nname)                                                                            \
	DECLARE_REAL(int, name, const char *, const char *, int, int, unsigned char *, int)                   \
	DECLARE_REAL(int, __##name, const char *, const char *, int, int, unsigned char *, int)               \
	DECLARE_REAL(int, nname, res_state, const char *, const char *, int, int, unsigned char *, int) \
	DECLARE_REAL(int, __##nname, res_state, const char *, const char *, int, int, unsigned char *, int) \
	EXPORT int name(const char *n, const char *d, int class, int type, unsigned char *answer, int anslen) { \
		char b[NS_MAXDNAME];                                                                              \
		int r = remote_query('q', joined(n, d, b, sizeof b), class, type, answer, anslen);                \
		return r == -2 ? CALL(name)(n, d, class, type, answer, anslen) : r;                               \
	}                                                                                                     \
	EXPORT int __##name(const char *n, const char *d, int class, int type, unsigned char *answer, int anslen) { \
		char b[NS_MAXDNAME];                                                                              \
		int r = remote_query('q', joined(n, d, b, sizeof b), class, type, answer, anslen);                \
		return r == -2 ? CALL(__##name)(n, d, class, type, answer, anslen) : r;                           \
	}                                                                                                     \
	EXPORT int nname(res_state st, const char *n, const char *d, int class, int type,               \
	                       unsigned char *answer, int anslen) {                                           \
		char b[NS_MAXDNAME];                                                                              \
		int r = remote_query('q', joined(n, d, b, sizeof b), class, type, answer, anslen);                \
		if (r == -2) return CALL(nname)(st, n, d, class, type, answer, anslen);                     \
		if (r < 0 && st) st->res_h_errno = h_errno;                                                       \
		return r;                                                                                         \
	}                                                                                                     \
	EXPORT int __##nname(res_state st, const char *n, const char *d, int class, int type,             \
	                         unsigned char *answer, int anslen) {                                         \
		char b[NS_MAXDNAME];                                                                              \
		int r = remote_query('q', joined(n, d, b, sizeof b), class, type, answer, anslen);                \
		if (r == -2) return CALL(__##nname)(st, n, d, class, type, answer, anslen);                   \
		if (r < 0 && st) st->res_h_errno = h_errno;                                                       \
		return r;                                                                                         \
	}

RES_DOMAIN_HOOKS(res_querydomain, res_nquerydomain)

DECLARE_REAL(int, res_send, const unsigned char *, int, unsigned char *, int)
DECLARE_REAL(int, __res_send, const unsigned char *, int, unsigned char *, int)
DECLARE_REAL(int, res_nsend, res_state, const unsigned char *, int, unsigned char *, int)
DECLARE_REAL(int, __res_nsend, res_state, const unsigned char *, int, unsigned char *, int)

EXPORT int res_send(const unsigned char *msg, int len, unsigned char *answer, int anslen) {
	int r = remote_send(msg, len, answer, anslen);
	return r == -2 ? CALL(res_send)(msg, len, answer, anslen) : r;
}

EXPORT int __res_send(const unsigned char *msg, int len, unsigned char *answer, int anslen) {
	int r = remote_send(msg, len, answer, anslen);
	return r == -2 ? CALL(__res_send)(msg, len, answer, anslen) : r;
}

EXPORT int res_nsend(res_state st, const unsigned char *msg, int len, unsigned char *answer, int anslen) {
	int r = remote_send(msg, len, answer, anslen);
	return r == -2 ? CALL(res_nsend)(st, msg, len, answer, anslen) : r;
}

EXPORT int __res_nsend(res_state st, const unsigned char *msg, int len, unsigned char *answer, int anslen) {
	int r = remote_send(msg, len, answer, anslen);
	return r == -2 ? CALL(__res_nsend)(st, msg, len, answer, anslen) : r;
}

// remote_change sends an unlink (U), mkdir (M) or rename (N). Returns 0,
// -1 with errno, or -2 to do it locally.
static int remote_change(char op, const char *arg, int dirfd, const char *path, int dirfd2, const char *path2) {
	char abs[PATH_MAX], abs2[PATH_MAX], req[2 * PATH_MAX + 32], resp[64];
	if (!layer_on() || !files_active || !abspath(dirfd, path, abs, sizeof abs)) return -2;
	int n;
	if (op == 'N') {
		if (!abspath(dirfd2, path2, abs2, sizeof abs2)) return -2;
		n = snprintf(req, sizeof req, "N\t%s\t%s\n", abs, abs2);
	} else {
		n = snprintf(req, sizeof req, "%c\t%s\t%s\n", op, arg, abs);
	}
	if (n >= (int)sizeof req || request(req, n, resp, sizeof resp, NULL) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	return strcmp(resp, "OK") == 0 ? 0 : -2;
}

// ---- metadata changes and links (fs write mode) ---------------------------
// chmod, chown, utimensat, truncate, link and symlink of a remote,
// writable path act on the target. The fd forms (fchmod, fchown,
// futimens, ftruncate) need no hook: a remote fd is a FUSE-view fd, whose
// changes reach the target by themselves.

// remote_modify sends a J/T/B/A request; 0, -1 with errno, -2: local.
static int remote_modify(const char *req, int n) {
	char resp[64];
	if (n < 0 || request(req, n, resp, sizeof resp, NULL) < 0) return -2;
	int e = reply_errno(resp);
	if (e) {
		errno = e;
		return -1;
	}
	return strcmp(resp, "OK") == 0 ? 0 : -2;
}

// remote_setattr: each of mode, uid, gid, at, mt is "-" (unchanged), a
// number, or for the times "now".
static int remote_setattr(int dirfd, const char *path, int follow, const char *mode, const char *uid,
                          const char *gid, const char *at, const char *mt) {
	char abs[PATH_MAX], req[PATH_MAX + 160];
	if (!layer_on() || !files_active || !path || !*path || !abspath(dirfd, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "J\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", follow, mode, uid, gid, at, mt, abs);
	return n < (int)sizeof req ? remote_modify(req, n) : -2;
}

static int remote_chmod(int dirfd, const char *path, mode_t mode, int follow) {
	char m[16];
	snprintf(m, sizeof m, "%u", (unsigned)(mode & 07777));
	return remote_setattr(dirfd, path, follow, m, "-", "-", "-", "-");
}

static int remote_chown(int dirfd, const char *path, uid_t uid, gid_t gid, int follow) {
	char u[16] = "-", g[16] = "-";
	if (uid != (uid_t)-1) snprintf(u, sizeof u, "%u", (unsigned)uid);
	if (gid != (gid_t)-1) snprintf(g, sizeof g, "%u", (unsigned)gid);
	return remote_setattr(dirfd, path, follow, "-", u, g, "-", "-");
}

static void time_text(const struct timespec *t, char *buf, size_t cap) {
	if (!t || t->tv_nsec == UTIME_NOW) snprintf(buf, cap, "now");
	else if (t->tv_nsec == UTIME_OMIT) snprintf(buf, cap, "-");
	else snprintf(buf, cap, "%lld", (long long)t->tv_sec * 1000000000LL + t->tv_nsec);
}

static int remote_utimens(int dirfd, const char *path, const struct timespec ts[2], int follow) {
	char at[32], mt[32];
	time_text(ts ? &ts[0] : NULL, at, sizeof at);
	time_text(ts ? &ts[1] : NULL, mt, sizeof mt);
	return remote_setattr(dirfd, path, follow, "-", "-", "-", at, mt);
}

DECLARE_REAL(int, chmod, const char *, mode_t)
DECLARE_REAL(int, fchmodat, int, const char *, mode_t, int)
DECLARE_REAL(int, chown, const char *, uid_t, gid_t)
DECLARE_REAL(int, lchown, const char *, uid_t, gid_t)
DECLARE_REAL(int, fchownat, int, const char *, uid_t, gid_t, int)
DECLARE_REAL(int, utimensat, int, const char *, const struct timespec *, int)
DECLARE_REAL(int, utimes, const char *, const struct timeval *)
DECLARE_REAL(int, utime, const char *, const struct utimbuf *)
DECLARE_REAL(int, lutimes, const char *, const struct timeval *)
DECLARE_REAL(int, futimesat, int, const char *, const struct timeval *)
DECLARE_REAL(int, truncate, const char *, off_t)
DECLARE_REAL(int, truncate64, const char *, off64_t)
DECLARE_REAL(int, link, const char *, const char *)
DECLARE_REAL(int, linkat, int, const char *, int, const char *, int)
DECLARE_REAL(int, symlink, const char *, const char *)
DECLARE_REAL(int, symlinkat, const char *, int, const char *)

EXPORT int chmod(const char *path, mode_t mode) {
	int r = remote_chmod(AT_FDCWD, path, mode, 1);
	return r == -2 ? CALL(chmod)(path, mode) : r;
}

EXPORT int fchmodat(int dirfd, const char *path, mode_t mode, int flags) {
	int r = remote_chmod(dirfd, path, mode, !(flags & AT_SYMLINK_NOFOLLOW));
	return r == -2 ? CALL(fchmodat)(dirfd, path, mode, flags) : r;
}

EXPORT int chown(const char *path, uid_t uid, gid_t gid) {
	int r = remote_chown(AT_FDCWD, path, uid, gid, 1);
	return r == -2 ? CALL(chown)(path, uid, gid) : r;
}

EXPORT int lchown(const char *path, uid_t uid, gid_t gid) {
	int r = remote_chown(AT_FDCWD, path, uid, gid, 0);
	return r == -2 ? CALL(lchown)(path, uid, gid) : r;
}

// fchownat with AT_EMPTY_PATH and "" is fchown of dirfd: the path test
// in remote_setattr leaves it local (through the view for a remote fd).
EXPORT int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags) {
	int r = remote_chown(dirfd, path, uid, gid, !(flags & AT_SYMLINK_NOFOLLOW));
	return r == -2 ? CALL(fchownat)(dirfd, path, uid, gid, flags) : r;
}

// utimensat with a NULL path is futimens(dirfd): local, as above.
EXPORT int utimensat(int dirfd, const char *path, const struct timespec ts[2], int flags) {
	int r = remote_utimens(dirfd, path, ts, !(flags & AT_SYMLINK_NOFOLLOW));
	return r == -2 ? CALL(utimensat)(dirfd, path, ts, flags) : r;
}

EXPORT int utimes(const char *path, const struct timeval tv[2]) {
	struct timespec ts[2];
	if (tv) {
		for (int i = 0; i < 2; i++) {
			ts[i].tv_sec = tv[i].tv_sec;
			ts[i].tv_nsec = tv[i].tv_usec * 1000;
		}
	}
	int r = remote_utimens(AT_FDCWD, path, tv ? ts : NULL, 1);
	return r == -2 ? CALL(utimes)(path, tv) : r;
}

// The obsolete forms: glibc implements them with utimensat internally,
// which the hook above does not see. futimesat with a NULL path is
// futimes(dirfd), and futimes itself needs no hook (see above).
static int remote_utimes(int dirfd, const char *path, const struct timeval *tv, int follow) {
	struct timespec ts[2];
	for (int i = 0; tv && i < 2; i++) {
		ts[i].tv_sec = tv[i].tv_sec;
		ts[i].tv_nsec = tv[i].tv_usec * 1000;
	}
	return remote_utimens(dirfd, path, tv ? ts : NULL, follow);
}

EXPORT int utime(const char *path, const struct utimbuf *times) {
	struct timeval tv[2];
	if (times) {
		tv[0] = (struct timeval){.tv_sec = times->actime};
		tv[1] = (struct timeval){.tv_sec = times->modtime};
	}
	int r = remote_utimes(AT_FDCWD, path, times ? tv : NULL, 1);
	return r == -2 ? CALL(utime)(path, times) : r;
}

EXPORT int lutimes(const char *path, const struct timeval tv[2]) {
	int r = remote_utimes(AT_FDCWD, path, tv, 0);
	return r == -2 ? CALL(lutimes)(path, tv) : r;
}

EXPORT int futimesat(int dirfd, const char *path, const struct timeval tv[2]) {
	int r = remote_utimes(dirfd, path, tv, 1);
	return r == -2 ? CALL(futimesat)(dirfd, path, tv) : r;
}

static int remote_truncate(const char *path, long long size) {
	char abs[PATH_MAX], req[PATH_MAX + 40];
	if (!layer_on() || !files_active || !path || !*path || !abspath(AT_FDCWD, path, abs, sizeof abs)) return -2;
	int n = snprintf(req, sizeof req, "T\t%lld\t%s\n", size, abs);
	return n < (int)sizeof req ? remote_modify(req, n) : -2;
}

EXPORT int truncate(const char *path, off_t size) {
	int r = remote_truncate(path, size);
	return r == -2 ? CALL(truncate)(path, size) : r;
}

EXPORT int truncate64(const char *path, off64_t size) {
	int r = remote_truncate(path, size);
	return r == -2 ? CALL(truncate64)(path, size) : r;
}

// remote_link: hard link (op 'B': a and b are paths) or symlink (op 'A':
// a is the link's text, b the new path).
static int remote_link(char op, int dirfd1, const char *a, int dirfd2, const char *b) {
	char abs1[PATH_MAX], abs2[PATH_MAX], req[2 * PATH_MAX + 8];
	if (!layer_on() || !files_active || !a || !b || !*a || !*b) return -2;
	if (!abspath(dirfd2, b, abs2, sizeof abs2)) return -2;
	const char *first = a;
	if (op == 'B') {
		if (!abspath(dirfd1, a, abs1, sizeof abs1)) return -2;
		first = abs1;
	}
	int n = snprintf(req, sizeof req, "%c\t%s\t%s\n", op, first, abs2);
	return n < (int)sizeof req ? remote_modify(req, n) : -2;
}

EXPORT int link(const char *from, const char *to) {
	int r = remote_link('B', AT_FDCWD, from, AT_FDCWD, to);
	return r == -2 ? CALL(link)(from, to) : r;
}

EXPORT int linkat(int fd1, const char *from, int fd2, const char *to, int flags) {
	int r = (flags & AT_EMPTY_PATH) ? -2 : remote_link('B', fd1, from, fd2, to);
	return r == -2 ? CALL(linkat)(fd1, from, fd2, to, flags) : r;
}

EXPORT int symlink(const char *target, const char *path) {
	int r = remote_link('A', AT_FDCWD, target, AT_FDCWD, path);
	return r == -2 ? CALL(symlink)(target, path) : r;
}

EXPORT int symlinkat(const char *target, int dirfd, const char *path) {
	int r = remote_link('A', AT_FDCWD, target, dirfd, path);
	return r == -2 ? CALL(symlinkat)(target, dirfd, path) : r;
}

DECLARE_REAL(int, unlink, const char *)
DECLARE_REAL(int, unlinkat, int, const char *, int)
DECLARE_REAL(int, rmdir, const char *)
DECLARE_REAL(int, mkdir, const char *, mode_t)
DECLARE_REAL(int, mkdirat, int, const char *, mode_t)
DECLARE_REAL(int, rename, const char *, const char *)
DECLARE_REAL(int, renameat, int, const char *, int, const char *)
DECLARE_REAL(int, renameat2, int, const char *, int, const char *, unsigned)

EXPORT int unlink(const char *path) {
	int r = remote_change('U', "0", AT_FDCWD, path, 0, NULL);
	return r == -2 ? CALL(unlink)(path) : r;
}

EXPORT int unlinkat(int dirfd, const char *path, int flags) {
	int r = remote_change('U', (flags & AT_REMOVEDIR) ? "1" : "0", dirfd, path, 0, NULL);
	return r == -2 ? CALL(unlinkat)(dirfd, path, flags) : r;
}

EXPORT int rmdir(const char *path) {
	int r = remote_change('U', "1", AT_FDCWD, path, 0, NULL);
	return r == -2 ? CALL(rmdir)(path) : r;
}

EXPORT int mkdir(const char *path, mode_t mode) {
	char m[16];
	snprintf(m, sizeof m, "%o", (unsigned)mode);
	int r = remote_change('M', m, AT_FDCWD, path, 0, NULL);
	return r == -2 ? CALL(mkdir)(path, mode) : r;
}

EXPORT int mkdirat(int dirfd, const char *path, mode_t mode) {
	char m[16];
	snprintf(m, sizeof m, "%o", (unsigned)mode);
	int r = remote_change('M', m, dirfd, path, 0, NULL);
	return r == -2 ? CALL(mkdirat)(dirfd, path, mode) : r;
}

EXPORT int rename(const char *from, const char *to) {
	int r = remote_change('N', NULL, AT_FDCWD, from, AT_FDCWD, to);
	return r == -2 ? CALL(rename)(from, to) : r;
}

EXPORT int renameat(int fd1, const char *from, int fd2, const char *to) {
	int r = remote_change('N', NULL, fd1, from, fd2, to);
	return r == -2 ? CALL(renameat)(fd1, from, fd2, to) : r;
}

// renameat2: RENAME_NOREPLACE (which mv tries first) is checked with a
// stat of the destination, as the agent's rename has no flags; other flags
// stay local.
EXPORT int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags) {
	if (flags & ~RENAME_NOREPLACE) return CALL(renameat2)(fd1, from, fd2, to, flags);
	if (flags & RENAME_NOREPLACE) {
		struct rstat st;
		int x = remote_stat(fd2, to, 0, &st);
		if (x == 0) {
			errno = EEXIST;
			return -1;
		}
		if (x == -2) return CALL(renameat2)(fd1, from, fd2, to, flags);
		if (errno != ENOENT) return -1;
	}
	int r = remote_change('N', NULL, fd1, from, fd2, to);
	return r == -2 ? CALL(renameat2)(fd1, from, fd2, to, flags) : r;
}

// realpath: glibc resolves with internal calls that bypass the hooks, so
// a remote path would not resolve. This walks the path with the hooked
// lstat and readlink, which go remote or local per path, as the program's
// other calls do. Only when the library is active; else libc's.
DECLARE_REAL(char *, realpath, const char *, char *)

EXPORT char *realpath(const char *path, char *resolved) {
	if (!layer_on() || !files_active || !path) return CALL(realpath)(path, resolved);
	char todo[PATH_MAX], out[PATH_MAX], link[PATH_MAX];
	if (!*path) {
		errno = ENOENT;
		return NULL;
	}
	if (path[0] == '/') {
		if (strlen(path) >= sizeof todo) goto toolong;
		strcpy(todo, path);
	} else {
		if (!getcwd(todo, sizeof todo)) return NULL;
		size_t l = strlen(todo);
		if (l + 1 + strlen(path) >= sizeof todo) goto toolong;
		todo[l] = '/';
		strcpy(todo + l + 1, path);
	}
	out[0] = 0;
	size_t olen = 0;
	int links = 0;
	char *p = todo;
	while (*p) {
		while (*p == '/') p++;
		if (!*p) break;
		char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == 1 && p[0] == '.') {
			p += n;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			char *slash = strrchr(out, '/');
			olen = slash ? (size_t)(slash - out) : 0;
			out[olen] = 0;
			p += n;
			continue;
		}
		if (olen + 1 + n >= sizeof out) goto toolong;
		out[olen] = '/';
		memcpy(out + olen + 1, p, n);
		size_t prev = olen;
		olen += 1 + n;
		out[olen] = 0;
		p += n;
		struct stat st;
		if (lstat(out, &st) < 0) return NULL; // hooked: remote or local
		if (S_ISLNK(st.st_mode)) {
			if (++links > 40) {
				errno = ELOOP;
				return NULL;
			}
			ssize_t ll = readlink(out, link, sizeof link - 1); // hooked too
			if (ll < 0) return NULL;
			link[ll] = 0;
			// The rest of the path goes after the link's target.
			char rest[PATH_MAX];
			if (strlen(p) >= sizeof rest) goto toolong;
			strcpy(rest, p);
			if (link[0] == '/') {
				olen = 0;
			} else {
				olen = prev;
			}
			out[olen] = 0;
			if (strlen(link) + 1 + strlen(rest) >= sizeof todo) goto toolong;
			size_t ln = strlen(link);
			memcpy(todo, link, ln);
			todo[ln] = 0;
			if (*rest) {
				todo[ln] = '/';
				strcpy(todo + ln + 1, rest);
			}
			p = todo;
		} else if (*p && !S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;
			return NULL;
		}
	}
	if (olen == 0) strcpy(out, "/");
	if (resolved) {
		strcpy(resolved, out);
		return resolved;
	}
	return strdup(out);
toolong:
	errno = ENAMETOOLONG;
	return NULL;
}

// ---- exec --------------------------------------------------------------

static int needs_netstack(const char *path);

// traced reports whether a debugger is attached (TracerPid in
// /proc/self/status).
static int traced(void) {
	char buf[4096];
	int fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0) return 0;
	ssize_t n = syscall(SYS_read, fd, buf, sizeof buf - 1);
	syscall(SYS_close, fd);
	if (n <= 0) return 0;
	buf[n] = 0;
	const char *p = strstr(buf, "TracerPid:");
	if (!p) return 0;
	p += strlen("TracerPid:");
	while (*p == ' ' || *p == '\t') p++;
	return *p != '0';
}

// ide_start runs in every process of a program that an IDE started with
// the environment `mirrord ext` returned (MIRRORD_LAYER_HOLD=1): no
// mirrord process is its parent, so
//   - the process tells the session it lives: a connection the session
//     holds until the process ends (close-on-exec, so each program image
//     holds its own; a forked child shares its parent's);
//   - a Go program (dynamically linked, so this library loaded) goes to
//     the netstack sandbox as layered parents send their Go children:
//     its system calls bypass libc. Delve goes there even when skipped:
//     the program it debugs runs under ptrace and must start inside.
static void ide_start(char **argv) {
	layer_set_up();
	int s = syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) return;
	if (syscall(SYS_connect, s, &proxy_addr, proxy_addr_len) < 0 ||
	    syscall(SYS_sendto, s, "W\n", 2, MSG_NOSIGNAL, NULL, 0) != 2) {
		// The session has ended (the environment outlived it): the
		// program runs as if mirrord were not there, hostname included,
		// and says so once for its whole tree (its children inherit an
		// environment without the session).
		static const char msg[] = "mirrord: the session this environment was made for has ended; "
		                          "running without the target's context (start the program from the IDE again)\n";
		syscall(SYS_write, 2, msg, sizeof msg - 1);
		syscall(SYS_close, s);
		unsetenv("MIRRORD_LAYER_SOCK");
		unsetenv("MIRRORD_LAYER_HOLD");
		layer_sock = NULL;
		return;
	}
	// Out of the way of programs that expect their low descriptors free.
	int high = syscall(SYS_fcntl, s, F_DUPFD_CLOEXEC, 500);
	if (high >= 0) syscall(SYS_close, s);

	char exe[PATH_MAX];
	ssize_t n = syscall(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0 || !mirrord_exe) return;
	exe[n] = 0;
	const char *base = strrchr(exe, '/');
	base = base ? base + 1 : exe;
	int debugger = strcmp(base, "dlv") == 0;
	if ((!debugger && is_skipped(exe)) || !needs_netstack(exe)) return;
	if (traced()) {
		// A debugger outside the session (one that does not load this
		// library: statically linked) started this program; a new image
		// under ptrace would confuse it. The program runs here, without
		// the session's network and files.
		static const char msg[] = "mirrord: this Go program runs under a debugger that is outside the mirrord "
		                          "session, so it runs without the target's context; use a dynamically linked "
		                          "debugger (go install github.com/go-delve/delve/cmd/dlv@latest with cgo)\n";
		syscall(SYS_write, 2, msg, sizeof msg - 1);
		return;
	}
	size_t argc = 0;
	while (argv && argv[argc]) argc++;
	char **v = malloc((argc + 4) * sizeof *v);
	if (!v) return;
	v[0] = (char *)mirrord_exe;
	v[1] = "layer-exec";
	v[2] = exe;
	for (size_t i = 0; i < argc; i++) v[3 + i] = argv[i];
	if (argc == 0) v[3 + argc++] = exe;
	v[3 + argc] = NULL;
	// (This process's hold closes with the exec; layer-exec holds the
	// session again before idle_timeout can pass.)
	CALL(execve)(mirrord_exe, v, environ);
	free(v); // mirrord could not run: go on here
}

// needs_netstack reports whether the executable at path is a Go program
// or statically linked: those make system calls without libc, so this
// library cannot see them, and mirrord runs them in its netstack sandbox.
static int needs_netstack(const char *path) {
	int fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return 0;
	Elf64_Ehdr eh;
	int result = 0;
	if (pread(fd, &eh, sizeof eh, 0) != sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
		goto out;
	// One read per table: this runs on every exec of the program's tree.
	Elf64_Phdr ph[64];
	if (eh.e_phnum == 0 || eh.e_phnum > 64) goto out;
	size_t phsize = sizeof ph[0] * eh.e_phnum;
	if (pread(fd, ph, phsize, eh.e_phoff) != (ssize_t)phsize) goto out;
	int interp = 0;
	for (int i = 0; i < eh.e_phnum; i++)
		if (ph[i].p_type == PT_INTERP) interp = 1;
	if (!interp) {
		result = eh.e_type == ET_EXEC || eh.e_type == ET_DYN;
		goto out;
	}
	// A dynamic Go program (cgo): look for the .go.buildinfo section.
	if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 || eh.e_shnum > 256 || eh.e_shstrndx >= eh.e_shnum)
		goto out;
	Elf64_Shdr sh[256];
	size_t shsize = sizeof sh[0] * eh.e_shnum;
	if (pread(fd, sh, shsize, eh.e_shoff) != (ssize_t)shsize) goto out;
	Elf64_Shdr *strs = &sh[eh.e_shstrndx];
	char names[4096];
	size_t nlen = strs->sh_size < sizeof names - 1 ? strs->sh_size : sizeof names - 1;
	ssize_t got = pread(fd, names, nlen, strs->sh_offset);
	if (got <= 0) goto out;
	names[got] = 0;
	for (int i = 0; i < eh.e_shnum; i++) {
		if (sh[i].sh_name < (size_t)got && strcmp(names + sh[i].sh_name, ".go.buildinfo") == 0) {
			result = 1;
			break;
		}
	}
out:
	syscall(SYS_close, fd);
	return result;
}

// netstack_argv builds `mirrord layer-exec PATH ARGV...` for a program
// that needs the netstack engine; NULL if it does not (or cannot).
static char **netstack_argv(const char *path, char *const argv[]) {
	if (!exec_on() || !mirrord_exe || !path || is_skipped(path) || !needs_netstack(path)) return NULL;
	size_t n = 0;
	while (argv && argv[n]) n++;
	char **v = malloc((n + 4) * sizeof *v);
	if (!v) return NULL;
	v[0] = (char *)mirrord_exe;
	v[1] = "layer-exec";
	v[2] = (char *)path;
	for (size_t i = 0; i < n; i++) v[3 + i] = argv[i];
	if (n == 0) v[3 + n++] = (char *)path;
	v[3 + n] = NULL;
	return v;
}

// search_path finds file in PATH like execvp; returns 0 if not found.
static int search_path(const char *file, char *out, size_t cap) {
	if (strchr(file, '/')) {
		snprintf(out, cap, "%s", file);
		return 1;
	}
	const char *p = getenv("PATH");
	if (!p) p = "/usr/local/bin:/usr/bin:/bin";
	while (*p) {
		size_t l = strcspn(p, ":");
		if (snprintf(out, cap, "%.*s%s%s", (int)l, p, l ? "/" : "", file) < (int)cap &&
		    syscall(SYS_faccessat, AT_FDCWD, out, X_OK) == 0)
			return 1;
		p += l;
		if (*p) p++;
	}
	return 0;
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
	char **v = netstack_argv(path, argv);
	if (v) {
		CALL(execve)(mirrord_exe, v, envp);
		free(v); // mirrord itself could not run: run the program as it is
	}
	return CALL(execve)(path, argv, envp);
}

EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
	char path[PATH_MAX];
	if (exec_on() && mirrord_exe && search_path(file, path, sizeof path)) {
		char **v = netstack_argv(path, argv);
		if (v) {
			CALL(execve)(mirrord_exe, v, envp);
			free(v);
		}
	}
	return CALL(execvpe)(file, argv, envp);
}

EXPORT int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
	char **v = netstack_argv(path, argv);
	if (v) {
		int r = CALL(posix_spawn)(pid, mirrord_exe, fa, attr, v, envp);
		free(v);
		return r;
	}
	return CALL(posix_spawn)(pid, path, fa, attr, argv, envp);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
	char path[PATH_MAX];
	if (exec_on() && mirrord_exe && search_path(file, path, sizeof path)) {
		char **v = netstack_argv(path, argv);
		if (v) {
			int r = CALL(posix_spawn)(pid, mirrord_exe, fa, attr, v, envp);
			free(v);
			return r;
		}
	}
	return CALL(posix_spawnp)(pid, file, fa, attr, argv, envp);
}

// cclient is the C twin of goclient, for C libraries other than glibc
// (the tests build it with musl-gcc, static and dynamic): it resolves a
// name, fetches / from its port 8080 over HTTP, echoes a datagram off its
// port 9000, reads a file, and prints an environment variable and the
// hostname, in goclient's words.
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>

static int dial(const char *host, const char *port, int type, char *ip, size_t iplen) {
	struct addrinfo hints = {0}, *res;
	hints.ai_family = AF_INET;
	hints.ai_socktype = type;
	if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
	if (ip) inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, iplen);
	int s = socket(res->ai_family, res->ai_socktype, 0);
	struct timeval tv = {5, 0};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (s < 0 || connect(s, res->ai_addr, res->ai_addrlen) < 0) {
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return s;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: cclient HOST [FILE]\n");
		return 2;
	}
	char ip[64] = "";
	int s = dial(argv[1], "8080", SOCK_STREAM, ip, sizeof ip);
	if (s < 0) {
		printf("dns/tcp error\n");
		return 1;
	}
	printf("dns %s\n", ip);
	char req[256];
	snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", argv[1]);
	write(s, req, strlen(req));
	char resp[4096];
	size_t got = 0;
	for (ssize_t n; got < sizeof resp - 1 && (n = read(s, resp + got, sizeof resp - 1 - got)) > 0;) got += n;
	resp[got] = 0;
	close(s);
	char *body = strstr(resp, "\r\n\r\n");
	printf("tcp %s\n", body ? body + 4 : "error");
	int u = dial(argv[1], "9000", SOCK_DGRAM, NULL, 0);
	char buf[128];
	ssize_t n = u < 0 ? -1 : (write(u, "ping", 4), read(u, buf, sizeof buf - 1));
	buf[n > 0 ? n : 0] = 0;
	printf("udp %s\n", n > 0 ? buf : "error");
	if (argc > 2) {
		FILE *f = fopen(argv[2], "r");
		char line[256] = "error";
		if (f) {
			if (!fgets(line, sizeof line, f)) strcpy(line, "error");
			fclose(f);
		}
		line[strcspn(line, "\n")] = 0;
		printf("file %s\n", line);
	}
	const char *env = getenv("SECRET_TOKEN");
	printf("env %s\n", env ? env : "");
	char host[256] = "";
	gethostname(host, sizeof host);
	printf("hostname %s\n", host);
	return 0;
}

#!/usr/bin/env bash
# Builds the images TestContainer runs in RUNTIME (docker, the default, or
# podman; no registry is reachable here, so they are assembled from this
# machine's files and imported):
#   mirrord-e2e/python:e2e     this machine's python3, its standard library
#                              and the shared libraries they load (glibc)
#   mirrord-e2e/static-go:e2e  FROM scratch: the static test app ($1),
#                              entrypoint /testapp, command serve
# The python image is built once (its content changes only with the
# machine's python3); the Go one on every run. Uses the runtime's
# environment ($DOCKER_HOST; podman's $CONTAINERS_CONF and
# $CONTAINERS_STORAGE_CONF).
set -euo pipefail
testapp=${1:?usage: container-images.sh TESTAPP_BINARY [RUNTIME]}
rt=${2:-docker}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! "$rt" image inspect mirrord-e2e/python:e2e >/dev/null 2>&1; then
	root=$work/python
	py=$(readlink -f /usr/bin/python3)
	stdlib=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
	mkdir -p "$root/usr/bin" "$root/tmp" "$root/etc"
	chmod 1777 "$root/tmp"
	cp "$py" "$root/usr/bin/"
	ln -s "$(basename "$py")" "$root/usr/bin/python3"
	tar -C / --exclude='test' --exclude='__pycache__' --exclude='idlelib' --exclude='tkinter' -cf - "${stdlib#/}" | tar -C "$root" -xf -
	# The loader and every library the interpreter and its extension
	# modules need, at the paths the loader looks in.
	{ ldd "$py"; for so in "$stdlib"/lib-dynload/*.so; do ldd "$so" 2>/dev/null || true; done; } |
		grep -o '/[^ ]*\.so[^ ]*' | sort -u | while read -r lib; do
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done
	# glibc's name service for getaddrinfo's "files" lookups.
	for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2; do
		[ -e "$lib" ] && cp -L "$lib" "$root$lib"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
	tar -C "$root" -cf - . | "$rt" import -c 'ENTRYPOINT ["/usr/bin/python3"]' -c 'ENV PATH=/usr/bin:/bin' - mirrord-e2e/python:e2e >/dev/null
fi

root=$work/go
mkdir -p "$root"
cp "$testapp" "$root/testapp"
tar -C "$root" -cf - . | "$rt" import -c 'ENTRYPOINT ["/testapp"]' -c 'CMD ["serve"]' - mirrord-e2e/static-go:e2e >/dev/null
# The Go image's earlier builds, untagged now.
"$rt" image prune -f >/dev/null

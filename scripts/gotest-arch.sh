#!/usr/bin/env bash
# Runs, for another architecture (arm64 on an amd64 machine), the unit
# tests of the packages whose logic depends on it: the system call
# tables and the seccomp filter's ABI (goshim; only those tests: the
# others make namespaces, which qemu-user cannot), the embedded preload
# library, and the config, filters and protocol (byte order, struct sizes).
# A foreign test binary runs under qemu-user, started by go test itself
# (-exec), so no binfmt_misc registration (privileged) is needed.
set -euo pipefail
arch=${1:?usage: gotest-arch.sh GOARCH}
run=()
if [ "$arch" != "$(env -u GOARCH go env GOARCH)" ]; then
	case $arch in
	arm64) qemu=qemu-aarch64 ;;
	amd64) qemu=qemu-x86_64 ;;
	*) echo "gotest-arch: no qemu-user emulator known for $arch" >&2; exit 1 ;;
	esac
	if ! command -v "$qemu" >/dev/null; then
		echo "gotest-arch: $qemu is missing; install qemu-user (make deps)" >&2
		exit 1
	fi
	run=(-exec "$qemu")
fi
export GOARCH=$arch
dir=$(dirname "$0")
"$dir/gotest.sh" "${run[@]}" ./config ./addrfilter ./httpfilter ./envfilter ./fsfilter ./protocol ./preload
"$dir/gotest.sh" "${run[@]}" -run '^(TestSyscallTables|TestAuditArch)$' ./goshim

#!/usr/bin/env bash
# Installs the system tools the tests use, if they are missing. Idempotent:
# it does nothing when everything is there.
set -euo pipefail
# The cross compilers build the preload library for each architecture (on
# either machine one of them is the native gcc); qemu-user runs the arm64
# unit tests (make unit-arm64). A value may name several packages.
declare -A pkg=([ip]=iproute2 [curl]=curl [unshare]=util-linux [getent]=libc-bin [python3]=python3 [pgrep]=procps [gcc]=gcc [node]=nodejs [getfattr]=attr [host]=bind9-host [dig]=bind9-dnsutils [musl-gcc]=musl-tools [socat]=socat [busybox]=busybox-static [dockerd]=docker.io [podman]=podman
	[x86_64-linux-gnu-gcc]=gcc-x86-64-linux-gnu [aarch64-linux-gnu-gcc]='gcc-aarch64-linux-gnu libc6-dev-arm64-cross' [qemu-aarch64]=qemu-user)
missing=()
for cmd in "${!pkg[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "deps: missing ${missing[*]}; install them (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # split the multi-package values
apt-get install -y -qq ${missing[*]} >/dev/null

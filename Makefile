# mirrord in Go. `make test` and `make demo` are the two entry points the
# README documents; both install what they need.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS := -s -w -X github.com/mirrord-go/mirrord/version.Version=$(VERSION)
BIN := bin/mirrord
# Static binary: the same file runs locally and as the in-cluster agent.
export CGO_ENABLED := 0

# GOARCH is the architecture of bin/mirrord (`GOARCH=arm64 make build`);
# HOSTARCH is this machine's. `make` also builds bin/mirrord-linux-ARCH for
# every architecture in ARCHES (the agent image holds both) and the darwin
# builds of the commands that need no engine (README: Supported platforms).
GOARCH := $(shell go env GOARCH)
HOSTARCH := $(shell env -u GOARCH go env GOARCH)
ARCHES := amd64 arm64
DARWIN_ARCHES := amd64 arm64

.PHONY: all build cross preload-lib deps test unit unit-arm64 lint lint-darwin fuzz demo e2e e2e-cluster e2e-down bench soak clean FORCE

all: build cross

# The C preload library, embedded in the binary (see preload/doc.go), one
# per architecture under preload/lib/ARCH/: each binary embeds its own.
# The host's architecture uses $(CC); the other ones Debian's cross
# compilers (gcc-aarch64-linux-gnu, gcc-x86-64-linux-gnu; make deps).
PRELOAD_SO = preload/lib/$(1)/libmirrord_layer.so
CC_amd64 := x86_64-linux-gnu-gcc
CC_arm64 := aarch64-linux-gnu-gcc
preload_cc = $(if $(filter $(1),$(HOSTARCH)),$(CC),$(CC_$(1)))
PRELOAD_CFLAGS := -O2 -Wall -Wextra -fPIC -shared -fvisibility=hidden -fno-delete-null-pointer-checks -Wno-nonnull-compare \
	-ffunction-sections -fdata-sections
# The library is loaded by every exec of the user's program tree, so its
# load cost is the engine's exec cost. Mappings and page faults dominate it:
# one text and one data segment (noseparate-code), no RELRO mprotect, no
# dead code or symbol tables. Measured with a paired spawn of /bin/true:
# +126 µs with the linker defaults, +57 µs with these (empty .so: +44 µs).
PRELOAD_LDFLAGS := -Wl,-z,noseparate-code -Wl,-z,norelro -Wl,--gc-sections -Wl,--hash-style=gnu -s

preload/lib/%/libmirrord_layer.so: preload/csrc/layer.c Makefile
	@mkdir -p $(@D)
	$(call preload_cc,$*) $(PRELOAD_CFLAGS) $(PRELOAD_LDFLAGS) -o $@ $< -ldl

preload-lib: $(call PRELOAD_SO,$(GOARCH))

build: $(call PRELOAD_SO,$(GOARCH))
	go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mirrord

# go build decides itself whether anything changed (FORCE: always ask it).
bin/mirrord-linux-%: preload/lib/%/libmirrord_layer.so FORCE
	GOOS=linux GOARCH=$* go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/mirrord

bin/mirrord-darwin-%: FORCE
	GOOS=darwin GOARCH=$* go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/mirrord

## cross: the Linux binaries of every architecture (bin/mirrord-linux-ARCH,
## each with its own preload library) and the darwin ones.
cross: $(foreach a,$(ARCHES),bin/mirrord-linux-$(a)) $(foreach a,$(DARWIN_ARCHES),bin/mirrord-darwin-$(a))

FORCE:

## unit: unit tests and the hermetic integration tests (network
## namespaces; they need root), with a closing summary line.
unit: $(call PRELOAD_SO,$(GOARCH))
	@scripts/gotest.sh ./...

## unit-arm64: the unit tests of the packages whose logic depends on the
## architecture (system call numbers and the seccomp filter, the embedded
## preload library, the config, filters and protocol), built for arm64 and
## run under qemu-user (no binfmt_misc needed) on another machine.
unit-arm64: $(call PRELOAD_SO,arm64)
	@scripts/gotest-arch.sh arm64

## lint: formatting, go vet and staticcheck (pinned in go.mod as a tool).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go tool staticcheck ./...
	@$(MAKE) -s lint-darwin

# The darwin build holds the packages `mirrord` pulls in there (the engine
# ones are Linux-only, README: Supported platforms): vet and staticcheck
# them for darwin (staticcheck built for this machine, run for darwin).
lint-darwin:
	@sc=$$(go tool -n staticcheck); for a in $(DARWIN_ARCHES); do \
		pkgs=$$(GOOS=darwin GOARCH=$$a go list -deps ./cmd/mirrord | grep '^github.com/mirrord-go/mirrord'); \
		GOOS=darwin GOARCH=$$a go vet $$pkgs; \
		GOOS=darwin GOARCH=$$a $$sc $$pkgs; \
	done

## fuzz: each fuzz target for FUZZTIME (default 6s), one after the other:
## what the agent parses on a stolen or mirrored port (HTTP/1, chunked
## bodies, upgrades, HTTP/2 frames and HPACK), the HTTP filters, the config
## loader and the protocol. Longer, or only some targets:
## `make fuzz FUZZTIME=10m FUZZ="FuzzFilteredSteal FuzzConfig"`. A failing
## input lands in the package's testdata/fuzz/FuzzXxx/ (commit it with the fix).
FUZZTIME ?= 6s
FUZZ ?=
fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh $(FUZZ)

## deps: system tools the tests use (iproute2, curl, python3, ...).
deps:
	@scripts/deps.sh

## test: everything CI checks: lint (also of the darwin build), the
## binaries of every platform (`make cross`), unit and hermetic integration
## tests, the arm64 unit tests under qemu-user (`make unit-arm64`), a short
## run of each fuzz target (`make fuzz`), then the e2e tests on the
## local Kubernetes cluster (built the first time, about 20 minutes on 2
## cores; reused afterwards; `make e2e-down` removes it), then the two-node
## tests on the kind cluster (built when missing, about 3 more minutes cold;
## skipped, saying so, where dockerd cannot run; E2E_KIND=0 skips it;
## scripts/e2e-test.sh). `make unit` is the quick loop.
test: deps lint build cross
	@echo "== unit and hermetic integration tests"
	@scripts/gotest.sh ./...
	@echo "== arm64 unit tests (qemu-user)"
	@$(MAKE) -s unit-arm64
	@echo "== fuzz targets, $(FUZZTIME) each"
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh
	@summary=$$(mktemp); trap 'rm -f "$$summary"' EXIT; scripts/e2e-test.sh "$$summary"; \
		echo "make test: PASS — lint, builds, unit, hermetic integration, arm64 unit, fuzz and e2e ($$(cat "$$summary"))"

## demo: a local cluster with a sample app, and mirrord exec against it.
demo: deps
	@scripts/demo.sh

## e2e-cluster: a local Kubernetes cluster for the e2e tests (needs root;
## installs and builds what it needs, cached under ~/.cache/mirrord-e2e; see
## e2e/README.md). Prints the kubeconfig path. Idempotent.
## E2E_CLUSTER=processes (default: one node, plain processes) or kind (a
## control-plane and a worker node, built offline; also for e2e and e2e-down).
e2e-cluster:
	@e2e/cluster/up.sh

## e2e-down: stop the e2e clusters and remove all they put on the machine
## (both kinds; E2E_CLUSTER=processes or kind: that one only).
e2e-down:
	@if [ -n "$${E2E_CLUSTER:-}" ]; then e2e/cluster/down.sh; else \
		rc=0; e2e/cluster/down.sh || rc=$$?; E2E_CLUSTER=kind e2e/cluster/down.sh || rc=$$?; exit $$rc; fi

## e2e: e2e-cluster, then the e2e tests (go test -tags e2e ./e2e/...).
e2e: $(call PRELOAD_SO,$(GOARCH))
	@e2e/run.sh

## bench: throughput side by side (needs root), then on the e2e cluster
## (started if needed): port-forward vs kubectl, exec startup; writes
## bench/results.md. BENCH_E2E=0 skips the cluster part.
bench: deps
	@scripts/bench.sh

## soak: one session under mixed traffic for SOAK_DURATION (default 30m;
## SOAK_SAMPLE between samples, default 1m); adds its section to
## bench/results.md. Separate from bench for its length.
soak: deps
	go test -tags bench -run '^TestSoak$$' -count=1 -v -timeout 3h ./integration
	go run ./bench/cmd/charts

clean:
	rm -rf bin preload/lib/*/*.so

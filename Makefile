# Flotilla — build, test and demo. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
CMDS := flotilla-agent flotilla-server flotctl flotilla-sim flotilla-demo
# The ONNX Runtime plugin: the one cgo binary (libonnxruntime is loaded at
# run time). ORT_LIB is the library `make deps` caches; tests and the plugin
# read it from FLOTILLA_ORT_LIB.
PLUGINS := flotilla-runtime-onnx
ORT_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x64)
ORT_LIB ?= $(or $(FLOTILLA_ORT_LIB),$(HOME)/.cache/flotilla/onnxruntime/1.30.0/linux-$(ORT_ARCH)/libonnxruntime.so.1)
export FLOTILLA_ORT_LIB := $(ORT_LIB)
# Fuzz targets that also get a short coverage-guided run in `make test`:
# the decoders every device and the control plane expose to the network.
# package:target, each fuzzed for FUZZTIME by fuzz-short
FUZZ_SHORT := proto/wire:FuzzDesired proto/wire:FuzzBirth proto/wire:FuzzTelemetry proto/summary:FuzzMerge
FUZZTIME ?= 10s

WASM_GUESTS := mlp misbehave nndigits nnprobe nnforward denseloop digitsmon badmon

.PHONY: wasm-guests help build test test-go fuzz-short demo bench soak lint proto proto-check cross cross-agent deb deps clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: wasm-guests ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(PLUGINS))

wasm-guests: ## build the example WASM guests into runtime/wasm/testdata/build/ (tests build their own)
	@mkdir -p runtime/wasm/testdata/build
	@for g in $(WASM_GUESTS); do \
		GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 $(GO) build -buildmode=c-shared \
			-o runtime/wasm/testdata/build/$$g.wasm ./runtime/wasm/testdata/guests/$$g; \
	done

deps: ## install on Debian what the tests need (mosquitto, protoc, onnx test data; libonnxruntime into ~/.cache), when missing
	@.ci/deps

test: deps wasm-guests ## run every test with -race, then short fuzz runs; prints per-package times
	@$(MAKE) --no-print-directory test-go fuzz-short

test-go:
	@log=$$(mktemp); start=$$(date +%s); rc=0; \
	$(GO) test -race -count=1 -timeout 25m ./... 2>&1 | tee $$log || rc=$$?; \
	echo; echo "== per-package test times (slowest first), total $$(( $$(date +%s) - start ))s"; \
	grep -E '^(ok|FAIL)\s' $$log | awk '{print $$NF, $$2}' | sort -rn | head -25; rm -f $$log; exit $$rc

fuzz-short:
	@for f in $(FUZZ_SHORT); do \
		pkg=$${f%%:*}; fn=$${f#*:}; \
		echo "== fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg/ || exit 1; \
	done

# bench's paired comparisons (package benchreport): BENCH_COUNT runs of each;
# BENCH_REPORT=-stdout prints the section instead of rewriting the file;
# BENCH_REPORT='-stdout -benchtime 1x' is a quick check that every pair still runs.
BENCH_COUNT ?= 3
BENCH_REPORT ?=
# BENCH_BASE_AGENT: an agent binary built from another commit, measured idle
# beside this tree's in the footprint run (see docs/benchmarks.md).
BENCH_BASE_AGENT ?=
bench: wasm-guests ## run the benchmarks (not in CI); writes the paired figures into docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./cmd/flotilla-benchreport -count $(BENCH_COUNT) $(BENCH_REPORT)
	FLOTILLA_BENCH=1 $(GO) test ./controlplane/delivery -run TestDeliveryBenchmark -v -timeout 30m
	$(MAKE) --no-print-directory build
	FLOTILLA_BENCH=1 FLOTILLA_BENCH_BIN=$(CURDIR)/$(BIN) FLOTILLA_BENCH_BASE_AGENT=$(if $(BENCH_BASE_AGENT),$(abspath $(BENCH_BASE_AGENT))) \
		$(GO) test ./demo -run TestAgentFootprint -v -timeout 10m

SOAK_AGENTS ?= 5000
SOAK_MINUTES ?= 10

soak: ## long load runs, never in CI (SOAK_AGENTS sim agents against one server for SOAK_MINUTES)
	FLOTILLA_SOAK=1 FLOTILLA_SOAK_AGENTS=$(SOAK_AGENTS) FLOTILLA_SOAK_MINUTES=$(SOAK_MINUTES) $(GO) test -run Soak -timeout 2h -v ./...

lint: ## gofmt, go vet, staticcheck, generated code in sync
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@$(MAKE) --no-print-directory proto-check

PROTOC_GEN_GO = $(shell $(GO) tool -n protoc-gen-go)
PROTOC_GEN_GO_GRPC = $(shell $(GO) tool -n protoc-gen-go-grpc)
PROTOC = protoc --plugin=protoc-gen-go=$(PROTOC_GEN_GO) --plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
	--go_opt=module=github.com/flotilla-edge/flotilla --go-grpc_opt=module=github.com/flotilla-edge/flotilla \
	-I proto proto/flotilla/v1/*.proto
proto: ## regenerate proto/flotillapb from proto/flotilla/v1/*.proto
	@command -v protoc >/dev/null || .ci/deps
	$(PROTOC) --go_out=. --go-grpc_out=.

proto-check: ## fail if the committed generated code differs from a fresh generation
	@command -v protoc >/dev/null || .ci/deps
	@tmp=$$(mktemp -d); \
	$(PROTOC) --go_out=$$tmp --go-grpc_out=$$tmp; \
	for f in $$tmp/proto/flotillapb/*.pb.go; do \
		cmp -s $$f proto/flotillapb/$$(basename $$f) || { echo "proto/flotillapb/$$(basename $$f) is stale: run make proto"; rm -rf $$tmp; exit 1; }; \
	done; \
	for f in proto/flotillapb/*.pb.go; do \
		[ -f $$tmp/proto/flotillapb/$$(basename $$f) ] || { echo "$$f has no .proto source"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code in sync"

cross: cross-agent ## cgo-free agent for linux amd64, arm64, arm/v7; server and flotctl for amd64, arm64
	@for t in amd64 arm64; do for c in flotilla-server flotctl; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$t $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$c-linux-$$t ./cmd/$$c; \
	done; done
	@ls -l $(BIN)/*-linux-*

AGENT_ARCHES ?= amd64 arm64 arm
cross-agent: ## cgo-free agent for linux amd64, arm64, arm/v7 (bin/flotilla-agent-linux-{amd64,arm64,arm})
	@mkdir -p $(BIN)
	@for t in $(AGENT_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$t GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o $(BIN)/flotilla-agent-linux-$$t ./cmd/flotilla-agent; \
	done

# The agent's Debian packages, built by nfpm (packaging/nfpm.yaml). Debian
# versions must start with a digit: 0.0.0+<git describe> until releases are
# tagged.
NFPM ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DEB_VERSION ?= $(shell echo '$(VERSION)' | sed -e '/^v[0-9]/{s/^v//;s/-/+/g;b;}' -e 's/-/./g;s/^/0.0.0+/')
DEB_ARCHES ?= amd64 arm64 armhf
deb: cross-agent ## flotilla-agent .deb for amd64, arm64, armhf into bin/ (DEB_ARCHES to choose)
	@for a in $(DEB_ARCHES); do \
		case $$a in armhf) g=arm ;; *) g=$$a ;; esac; \
		DEB_ARCH=$$a GOARCH_BIN=$$g DEB_VERSION='$(DEB_VERSION)' BIN='$(BIN)' \
			$(NFPM) pkg --packager deb --config packaging/nfpm.yaml --target $(BIN)/; \
	done


# The digits model, data and test split the demo builds its bundle from.
DEMO_MODEL_DIR ?= ../shared/models/digits
DEMO_FLAGS ?=

demo: build ## server, five real agents, the digits bundle rolled out in stages, traffic, then drift; Ctrl-C stops it
	@$(BIN)/flotilla-demo -bin $(BIN) -work .demo -model-dir $(DEMO_MODEL_DIR) $(DEMO_FLAGS)

clean:
	rm -rf $(BIN) .demo

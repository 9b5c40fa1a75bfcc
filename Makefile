# scrapegate — every developer and CI command. `make help` lists them.

GO          ?= go
BIN         := bin/scrapegate
IMAGE       ?= scrapegate:dev
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHSTAT   := golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
# Runs of each Go benchmark, for benchstat's confidence intervals.
BENCHCOUNT  ?= 6
# Flags for `make loadbench`, e.g. LOADBENCH_ARGS='-scenarios=rate,saturation -phase=10s'
LOADBENCH_ARGS ?=
# Flags for `make run`; setting ARGS replaces these defaults, e.g.
# make run ARGS='--allow-cidrs=127.0.0.0/8 --log-format=console'
ARGS        ?= --log-format=console
FUZZTIME    ?= 30s
# apt-get needs root; use sudo when not root and it exists.
SUDO        := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
# Stamped into the binary for -version and scrapegate_build_info; empty (no
# git) falls back to what the Go toolchain records in the binary.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILDINFO   := github.com/scrapegate/scrapegate/gateway/buildinfo
LDFLAGS     := -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).revision=$(REVISION)
# Tests of allocation counts, which mean nothing under the race detector:
# run a second time without it.
ALLOC_TESTS := ^TestScrapeAllocatesNothing$$
# Where `make bench` writes: ignored by git, so a run changes no tracked file.
# `make bench-record` writes into bench/results/ instead, to be committed.
BENCH_OUT   ?= bench/results/local

.PHONY: help build run test test-deps bench-deps vet unit bench bench-record loadbench fuzz fmt lint docs docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

build: ## build bin/scrapegate (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/scrapegate

run: build ## run the gateway on :8080 (ARGS='...' sets its flags)
	./$(BIN) $(ARGS)

test: test-deps vet ## vet, race-enabled unit tests, and the end-to-end tests with real Prometheus servers and a real API server
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -count=1 -run '$(ALLOC_TESTS)' ./bench/

unit: ## race-enabled unit tests only (-short): no apt-get, no test binaries, no real Prometheus or API server
	$(GO) test -short -race -count=1 ./...
	$(GO) test -short -count=1 -run '$(ALLOC_TESTS)' ./bench/

# Built from the module proxy by .ci/testbin and cached outside the repository
# (~27 minutes the first time on 2 cores); the tests ask .ci/testbin for their paths.
TESTBINS = etcd kube-apiserver kube-scheduler kube-controller-manager kubectl prometheus promtool

test-deps: bench-deps ## install what the tests need: Debian's prometheus, nginx and iproute2, and TESTBINS built once
	@command -v prometheus >/dev/null 2>&1 || { \
		echo "installing Debian's prometheus package for the end-to-end test"; \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus; }
	@command -v ip >/dev/null 2>&1 || test -x /usr/sbin/ip || test -x /sbin/ip || { \
		echo "installing Debian's iproute2 package for the network namespace of the Service end-to-end tests"; \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends iproute2; }
	@set -e; for b in $(TESTBINS); do .ci/testbin $$b >/dev/null; done

bench-deps: ## install Debian's nginx, the load harness's third proxy
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
		echo "installing Debian's nginx package for the load harness"; \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nginx-light; }

vet: ## go vet
	$(GO) vet ./...

bench: ## Go benchmarks of one scrape direct, through scrapegate and through httputil, compared by benchstat into bench/results/local/ (ignored by git)
	@mkdir -p $(BENCH_OUT)
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./bench/ | tee $(BENCH_OUT)/gobench.txt
	$(GO) run $(BENCHSTAT) -col /proxy $(BENCH_OUT)/gobench.txt | tee $(BENCH_OUT)/gobench-benchstat.txt

bench-record: ## make bench, writing into the tracked bench/results/ to commit
	$(MAKE) bench BENCH_OUT=bench/results

loadbench: build bench-deps ## load harness: simulated cluster through direct, scrapegate, httputil and nginx; results into bench/results/ and docs/operations.md
	$(GO) run ./bench/cmd/loadbench $(LOADBENCH_ARGS)

FUZZ_TARGETS = FuzzParsePodPath FuzzParseAbsoluteURI FuzzPolicy FuzzPathPrefixes FuzzParseAuthorization

fuzz: ## run each fuzz target for FUZZTIME
	@set -e; for f in $(FUZZ_TARGETS); do \
		echo "== $$f"; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./gateway; \
	done

fmt: ## gofmt every file
	gofmt -w .

lint: vet ## go vet and staticcheck (fetched through the module proxy)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "run make fmt"; exit 1; }
	$(GO) run $(STATICCHECK) ./...

docs: ## regenerate docs/flags.md from the flags defined in cmd/scrapegate/flags.go (scrapegate -help-markdown)
	$(GO) run ./cmd/scrapegate -help-markdown > docs/flags.md.tmp
	mv docs/flags.md.tmp docs/flags.md

docker: ## build the container image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) .

clean: ## remove build output
	rm -rf bin

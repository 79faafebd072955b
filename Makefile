# mxguard — make run | make test | make bench
GO        ?= go
PKGS      ?= ./...
BIN       ?= bin/mxguard
CONFIG    ?= config/quickstart.yaml
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: run build test vet fmt-check deps bench bench-micro bench-load fuzz clean

## run: start the gateway on the quick-start config (127.0.0.1:2525, mail for demo.test into ./var/delivered)
run: build
	@mkdir -p var
	./$(BIN) serve --config $(CONFIG)

build:
	$(GO) build -o $(BIN) ./cmd/mxguard

## test: the whole suite (vet, gofmt, race-enabled tests against real DNS, SMTP and redis-server on loopback)
test: deps vet fmt-check
	$(GO) test $(TESTFLAGS) $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

## deps: make sure the programs the tests start exist (redis-server, redis-cli)
deps:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
		echo "installing redis-server for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

## bench: micro-benchmarks with allocations, then the load benchmark (docs/performance.md)
bench: bench-micro bench-load

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s $(PKGS)

MXLOAD      ?= bin/mxload
BENCH_OUT   ?= bench-out
MXLOAD_ARGS ?=

## bench-load: load benchmark (direct vs mxguard with all checks vs relay only vs a bare go-smtp proxy;
## 4 KiB, 64 KiB, 1 MiB), then 10,000 idle connections, a goroutine/fd leak check and 200 concurrent
## 10 MiB messages against the memory budget; PROFILE=1 writes gateway profiles to $(BENCH_OUT)/
bench-load: deps
	$(GO) build -o $(MXLOAD) ./cmd/mxload
	./$(MXLOAD) bench $(MXLOAD_ARGS) $(if $(filter 1,$(PROFILE)),-profile -out $(BENCH_OUT))
	./$(MXLOAD) idle
	./$(MXLOAD) leak
	./$(MXLOAD) large

## fuzz: a short run of every fuzz target
fuzz:
	@for pkg in ./filter ./auth; do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin var bench-out

# mxguard — make run | make test | make bench
GO        ?= go
PKGS      ?= ./...
BIN       ?= bin/mxguard
CONFIG    ?= config/quickstart.yaml
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: run build test vet fmt-check deps bench fuzz clean

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

## bench: micro-benchmarks with allocations
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s $(PKGS)

## fuzz: a short run of every fuzz target
fuzz:
	@for pkg in ./filter ./auth; do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin var

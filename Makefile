# pgsplit: the two commands a newcomer needs are `make demo` and `make test`.
GO ?= go
BIN := bin/pgsplit

.PHONY: build demo test unit lint bench fuzz deb clean

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/pgsplit

## demo: throwaway primary + 2 streaming replicas + pgsplit; prints DATABASE_URL. Ctrl-C cleans up.
demo: build
	@scripts/ensure-postgres.sh
	./$(BIN) demo

## test: every test, unit and end-to-end (starts its own PostgreSQL cluster).
test:
	@scripts/ensure-postgres.sh
	@scripts/ensure-test-deps.sh
	$(GO) test -race -count=1 -timeout 20m ./...

## unit: the tests that need no PostgreSQL.
unit:
	$(GO) test -count=1 ./admin/ ./config/ ./internal/wire/ ./proxy/ ./router/ ./cmd/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## bench: Go micro-benchmarks of the hot path.
bench:
	$(GO) test -run XXX -bench . -benchmem ./internal/wire/ ./router/
	$(GO) test -run XXX -bench QueryStatsObserve -benchmem ./proxy/

## fuzz: a run of every fuzz target, FUZZTIME each (30s; CI runs 20000x each,
## longer runs: make fuzz FUZZTIME=10m).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run XXX -fuzz FuzzReader$$ -fuzztime $(FUZZTIME) ./internal/wire/
	$(GO) test -run XXX -fuzz FuzzReaderLimit -fuzztime $(FUZZTIME) ./internal/wire/
	$(GO) test -run XXX -fuzz FuzzConnReader -fuzztime $(FUZZTIME) ./internal/wire/
	$(GO) test -run XXX -fuzz FuzzFrames -fuzztime $(FUZZTIME) ./internal/pgmsg/
	$(GO) test -run XXX -fuzz FuzzParseStartup -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run XXX -fuzz FuzzAppendExtended -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run XXX -fuzz FuzzAdminExtended -fuzztime $(FUZZTIME) ./admin/
	$(GO) test -run XXX -fuzz FuzzFastPathNeverUnsafe -fuzztime $(FUZZTIME) ./router/
	$(GO) test -run XXX -fuzz FuzzDepthNeverUnderestimatesNesting -fuzztime $(FUZZTIME) ./router/
	$(GO) test -run XXX -fuzz FuzzParseHeader -fuzztime $(FUZZTIME) ./internal/handoff/
	$(GO) test -run XXX -fuzz FuzzDecodeMoved -fuzztime $(FUZZTIME) ./proxy/

## deb: the Debian package (binary, /etc/pgsplit/config.yaml, hardened systemd unit) in bin/.
deb:
	@scripts/build-deb.sh bin

clean:
	rm -rf bin

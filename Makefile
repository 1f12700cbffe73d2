# pgfallback developer commands. `make test` is what CI runs (via .ci/run).
GO       ?= go
PKGS     ?= ./...
BENCH    ?= .
BENCHTIME ?= 1s

.PHONY: test fuzz vet fmt fmt-check cover bench demo tidy

# libpq's environment variables apply to every connection pgx makes, the
# tests' too: a developer's PGOPTIONS ('-c DateStyle=German'), PGAPPNAME or
# PGTARGETSESSIONATTRS, set for other work, failed tests that check the
# session they get. Not passed to the commands below. PGPASSWORD and the
# TLS ones stay: an external PGFALLBACK_TEST_DSN may need them.
unexport PGOPTIONS PGAPPNAME PGTARGETSESSIONATTRS PGTZ PGSERVICE PGSERVICEFILE

# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail at the deadline with "context deadline exceeded" while a worker is
# busy, no failing input found (golang/go#75804, fixed in Go 1.27); a busy
# CI machine hit it. 50,000 runs take about 5 s per target here.
FUZZTIME ?= 50000x
# Each input that finds new coverage is minimized before fuzzing goes on,
# for up to 60 s by default, shown as "0/sec": a wide input made make
# fuzz take 7 to 18 s per target instead of 4 to 6. 200 tries is enough
# here; a failing input is still written, only less shrunk.
FUZZMINIMIZE ?= 200x

## test: every test with the race detector, against a real PostgreSQL, then a short run of every fuzz target;
## the fuzz half runs even when a test fails, and the result of both is reported
# Through a variable: make -n runs every recipe line that names $(MAKE)
# directly, which here would run the whole test suite.
SUBMAKE = $(MAKE) --no-print-directory
test:
	@$(GO) test -race -count=1 $(PKGS); tests=$$?; \
	$(SUBMAKE) fuzz; fuzz=$$?; \
	echo "make test: tests $$( [ $$tests -eq 0 ] && echo passed || echo FAILED ), fuzz $$( [ $$fuzz -eq 0 ] && echo passed || echo FAILED )"; \
	[ $$tests -eq 0 ] && [ $$fuzz -eq 0 ]

## fuzz: each fuzz target for FUZZTIME runs (the seed corpora also run as plain tests in `go test`)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzMetadataNesting$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./repository/
	$(GO) test -run '^$$' -fuzz '^FuzzParseKey$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./sqlitecache/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEntry$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./sqlitecache/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCursor$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./pgstore/

## vet: go vet
vet:
	$(GO) vet $(PKGS)

## fmt: format the code in place
fmt:
	gofmt -w $$(git ls-files '*.go')

## fmt-check: fail when a file is not gofmt'ed
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## cover: tests with coverage, summary per function in cover.txt, HTML in cover.html
cover:
	$(GO) test -race -count=1 -coverpkg=./... -coverprofile=cover.out $(PKGS)
	$(GO) tool cover -func=cover.out > cover.txt && tail -1 cover.txt
	$(GO) tool cover -html=cover.out -o cover.html

## bench: the benchmarks, with allocations
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime=$(BENCHTIME) $(PKGS)

## demo: a failover drill of every scenario on an embedded PostgreSQL, report in drill-report.{html,json}
demo:
	$(GO) run ./cmd/pgfallback drill --scenario all --json drill-report.json --html drill-report.html

tidy:
	$(GO) mod tidy

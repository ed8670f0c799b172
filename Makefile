# docpipe: `make deps` then `make run` (or `make test`) on Debian/Ubuntu.

GO      ?= go
BIN     := bin/docpipe
BENCH   ?= .
COUNT   ?= 6

.DEFAULT_GOAL := help
.PHONY: help deps build run test lint bench

help: ## list the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z]+:.*## / { printf "  make %-6s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

deps: ## install the system packages (apt-get; sudo when not root)
	@scripts/deps.sh

build: ## build bin/docpipe
	$(GO) build -o $(BIN) ./cmd/docpipe

# docpipe starts (and reuses) its private PostgreSQL under its data
# directory: nothing needs to be running first.
run: deps build ## build, then process the sample documents into out/ (workbooks + summary)
	./$(BIN) process scripts/samples -o out

# Tesseract's OpenMP threads fight the stage's own workers: one each; and
# glibc's per-thread arenas inflate RSS under cgo (docpipe sets both itself).
test: export OMP_THREAD_LIMIT := 1
test: export MALLOC_ARENA_MAX := 2
test: deps ## go vet, then every test with the race detector
	$(GO) vet ./...
	$(GO) test -race ./...

lint: ## gofmt, go vet, staticcheck
	@files=$$(gofmt -l .); if [ -n "$$files" ]; then echo "gofmt -l: needs formatting:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

bench: export OMP_THREAD_LIMIT := 1
bench: export MALLOC_ARENA_MAX := 2
bench: deps ## benchmarks, benchstat-friendly (BENCH=regexp COUNT=n)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(COUNT) ./...

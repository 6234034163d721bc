# The two commands a newcomer needs: `make run` (the service locally, with Azurite, a throw-away
# PostgreSQL and the project's local Functions host) and `make test` (the whole suite).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 45m

.PHONY: all build test run package lint bench token clean deps

all: build

# npm packages (Azurite, axe-core) pinned by package-lock.json; reinstalled only when the lock changes.
# Chromium (Debian's package) for the console's browser tests, installed when missing.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
deps: node_modules/.package-lock.json
	$(GO) mod download
	internal/dev/setup/ensure-chromium

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/handler ./handler
	$(GO) build -o bin/funchost ./internal/dev/cmd/funchost
	$(GO) build -o bin/devrun ./internal/dev/cmd/devrun

# Everything: unit, integration (real PostgreSQL 15, real Azurite) and end-to-end (local Functions host
# running the real handler binary).
test: deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# What Azure deploys: host.json, one folder per function and the handler binary side by side
# (`func start` works in dist/ too).
package:
	rm -rf dist && mkdir -p dist
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o dist/handler ./handler
	cp host.json dist/
	cp -r functions/* dist/
	@echo "dist/ is ready: $$(ls dist | tr '\n' ' ')"

# The service locally: Azurite, a throw-away PostgreSQL (unless DEV_DATABASE_URL is set), a local OIDC
# issuer, a seeded demo environment and the local Functions host on http://127.0.0.1:7071. Ctrl-C stops all.
run: deps package
	$(GO) build -o bin/devrun ./internal/dev/cmd/devrun
	bin/devrun run -app dist

# A bearer token for the demo user of `make run`.
token:
	@$(GO) build -o bin/devrun ./internal/dev/cmd/devrun && bin/devrun token

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: deps
	$(GO) run ./internal/dev/cmd/bench

clean:
	rm -rf bin dist .local

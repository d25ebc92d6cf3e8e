# remotemedia-webrtc — build, run and test on a fresh Debian machine.
#
#   make run    builds and starts `webrtc_server --mode grpc` with examples/loopback.yaml
#   make test   installs what the tests need and runs them
#
# CARGO_TARGET_DIR may point outside the clone so later runs reuse the build.

CARGO ?= cargo
MANIFEST ?= examples/loopback.yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build run test lint fmt clean

all: build

# System packages: cmake builds libopus from source (opus crate), protoc compiles the protos,
# chromium runs the demo page in tests/browser.rs (headless, driven over DevTools).
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v cc >/dev/null || missing="$$missing build-essential"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --bin webrtc_server

run: build
	RUST_LOG=$${RUST_LOG:-info} $(CARGO) run --bin webrtc_server -- --mode grpc --manifest $(MANIFEST)

test: deps
	$(CARGO) test

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean

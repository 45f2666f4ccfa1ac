#!/usr/bin/env bash
# Builds the wheels of tradeengine (Rust core included, release mode) and of every plugin
# distribution under plugins/ into the directory given. Used by the Dockerfile's build stage
# and by tests/test_deploy.py, so that the image's install is the one tested.
set -euo pipefail
out=${1:?usage: deploy/build-wheels.sh OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
"$python" -m maturin build --release --quiet --out "$out"
for plugin in plugins/*/pyproject.toml; do
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$(dirname "$plugin")"
done
ls "$out"

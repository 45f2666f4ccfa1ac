#!/usr/bin/env bash
# Installs the wheels built by deploy/build-wheels.sh with their dependencies from the package
# index. The Dockerfile's runtime stage runs exactly this.
set -euo pipefail
wheels=${1:?usage: deploy/install-wheels.sh WHEEL_DIR}
python=${PYTHON:-python3}
"$python" -m pip install --quiet --no-cache-dir "$wheels"/tradeengine-*.whl
"$python" -m pip install --quiet --no-cache-dir "$wheels"/*.whl

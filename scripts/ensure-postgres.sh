#!/usr/bin/env bash
# The store, recovery and crash tests run against a real PostgreSQL server: each test session
# starts a throwaway cluster of its own (initdb in a temporary directory, a free loopback
# port; see tests/conftest.py). This installs Debian's server packages when they are missing
# (the machines run as root; elsewhere run this with sudo). It starts no service.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb"
# initdb refuses to run as root: the tests run it as the `postgres` user the package makes.
id postgres >/dev/null

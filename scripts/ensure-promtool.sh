#!/usr/bin/env bash
# promtool checks the alert rules in the tests: install Debian's prometheus package when it is
# missing (the machines run as root; elsewhere run this with sudo).
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool

#!/usr/bin/env bash
# The bounded soak of issue 10 against a real daemon: 16 client processes of another uid
# mixing inline and shm runs, loads and unloads, SIGKILLed at random and replaced, beside
# well-behaved clients that must lose no request. Asserts the daemon's descriptors and
# regions return to the baseline and its RSS to within 10% of it, and prints the figures.
#
#   scripts/soak.sh [SECONDS]      # default 300 (CI runs the same test for 60 s)
#
# Needs root (the clients run as another uid through setpriv), like the hostile tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-300}
cargo build -q -p switchyard-daemon --bins
SWITCHYARD_SOAK_SECS=$SECS cargo nextest run -p switchyard-tests --test soak \
  --no-capture soak_with_hostile_clients

#!/usr/bin/env bash
# Sets up what is missing, then runs Chinwag. Until the desktop app exists this is the relay:
# extra arguments go to it (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
chinwag_setup
exec cargo run --release --locked -p chinwag-relay -- "$@"

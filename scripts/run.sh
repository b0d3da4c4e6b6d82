#!/usr/bin/env bash
# Sets up what is missing, then runs the Chinwag desktop app. Extra arguments go to it:
# --demo for a call with a built-in bot, --server HOST --room ROOM --name NAME --join to dial.
# For the relay alone: cargo run --release -p chinwag-relay -- --help
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
chinwag_setup
exec cargo run --release --locked -p chinwag -- "$@"

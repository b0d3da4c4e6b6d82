#!/usr/bin/env bash
# Sets up what is missing, then runs every check CI runs: formatting, lints, the cores'
# dependency rule, and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
chinwag_setup with-tests

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cores do no IO: no async runtime, sockets, devices or windows below them"
for core in chinwag-proto chinwag-jitter chinwag-queue chinwag-call chinwag-rate; do
    forbidden=$(cargo tree --locked -p "$core" -e normal --prefix none \
        | grep -E '^(tokio|mio|tungstenite|tokio-tungstenite|cpal|nokhwa|egui|eframe|winit) ' || true)
    if [ -n "$forbidden" ]; then
        printf '%s depends on IO crates:\n%s\n' "$core" "$forbidden" >&2
        exit 1
    fi
done

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace 2>&1 | tee "$log"
# One closing line for the whole run: cargo prints one result line per test binary, and the
# last of those is usually a crate's empty doc-test run.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"

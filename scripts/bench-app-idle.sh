#!/usr/bin/env bash
# Idle CPU of the desktop app on its connect screen, under a private Xvfb, over 10 s.
# Usage: cargo build --release -p chinwag && scripts/bench-app-idle.sh [target/release/chinwag]
set -euo pipefail
app=${1:-target/release/chinwag}
display=:$((100 + RANDOM % 100))
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
home=$(mktemp -d)
trap 'kill "$app_pid" "$xvfb" 2>/dev/null || true; rm -rf "$home"' EXIT
sleep 1
DISPLAY=$display HOME=$home XDG_DATA_HOME=$home "$app" >/dev/null 2>&1 &
app_pid=$!
sleep 3
ticks() { awk '{print $14 + $15}' "/proc/$app_pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep 10
after=$(ticks)
awk -v t=$((after - before)) -v hz="$hz" \
    'BEGIN { printf "chinwag idle on the connect screen: %.2f %% of one core over 10 s\n", t / hz / 10 * 100 }'

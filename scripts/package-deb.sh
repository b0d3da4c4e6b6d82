#!/usr/bin/env bash
# Builds target/debian/chinwag_VERSION_ARCH.deb: the app, the relay and the bot, with the
# desktop entry and icon from assets/. Run on Debian or Ubuntu: scripts/package-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
chinwag_setup
cargo build --release --locked -p chinwag -p chinwag-relay -p chinwag-bot
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -Dm755 "$target_dir/release/chinwag" "$root/usr/bin/chinwag"
install -Dm755 "$target_dir/release/chinwag-relay" "$root/usr/bin/chinwag-relay"
install -Dm755 "$target_dir/release/chinwag-bot" "$root/usr/bin/chinwag-bot"
install -Dm644 assets/chinwag.desktop "$root/usr/share/applications/chinwag.desktop"
install -Dm644 assets/chinwag.svg "$root/usr/share/icons/hicolor/scalable/apps/chinwag.svg"
install -Dm644 README.md "$root/usr/share/doc/chinwag/README.md"
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: chinwag
Version: $version
Architecture: $arch
Maintainer: Chinwag developers <chinwag@example.invalid>
Section: net
Priority: optional
Depends: libasound2, libx11-6, libxcursor1, libxrandr2, libxi6, libxkbcommon-x11-0, libwayland-client0, libwayland-egl1, libgl1, libegl1
Recommends: libgl1-mesa-dri, pulseaudio | pipewire-pulse
Description: voice and video calls, and the relay they go through
 Chinwag is a desktop voice and video call client (chinwag), the relay server it
 dials (chinwag-relay) and a headless client for tests and echo service (chinwag-bot).
CONTROL
mkdir -p "$target_dir/debian"
out="$target_dir/debian/chinwag_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "$root" "$out" >/dev/null
echo "$out"

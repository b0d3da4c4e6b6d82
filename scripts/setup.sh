#!/usr/bin/env bash
# Installs what building and testing Chinwag needs, and nothing that is already there.
# Sourced by run.sh and test.sh; safe to run on its own. Debian and Ubuntu get their packages
# through apt-get (with sudo when not root); other systems get a list of what to install.
set -euo pipefail

# Packages to build everything: a C compiler and pkg-config for the crates that build C, and
# cmake for libopus and libjpeg-turbo, which their crates build from source; nasm for
# libjpeg-turbo's SIMD; ALSA headers for cpal; libclang for the camera bindings (nokhwa).
CHINWAG_BUILD_PACKAGES=(build-essential pkg-config ca-certificates cmake nasm libasound2-dev libclang-dev)
# What the desktop app loads at run time on Linux: X11 and Wayland client libraries, keyboard
# handling, and OpenGL (Mesa, which also renders in software where there is no GPU).
CHINWAG_RUN_PACKAGES=(libx11-6 libxcursor1 libxrandr2 libxi6 libxkbcommon-x11-0 libwayland-client0 libwayland-egl1 libgl1 libegl1 libgl1-mesa-dri)
# Extra packages the tests use: kill for signal tests; a private PulseAudio server with a null
# sink behind ALSA's pulse plugin for real-device tests; espeak-ng and sox for test speech;
# Xvfb and xwd to run and photograph the real window; Mesa's software Vulkan for the app's
# rendered UI snapshots (wgpu).
CHINWAG_TEST_PACKAGES=(procps nats-server pulseaudio pulseaudio-utils libasound2-plugins espeak-ng sox xvfb x11-apps mesa-vulkan-drivers)

chinwag_say() { printf 'chinwag setup: %s\n' "$*" >&2; }

chinwag_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        chinwag_say "need root to run: $* (install sudo or run as root)"
        return 1
    fi
}

# chinwag_install_packages PACKAGE...: installs the Debian packages that are missing.
chinwag_install_packages() {
    local missing=()
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    chinwag_say "installing ${missing[*]}"
    chinwag_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    chinwag_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

chinwag_install_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        chinwag_say "installing the Rust toolchain with rustup (https://rustup.rs)"
        if command -v apt-get >/dev/null 2>&1; then
            chinwag_install_packages curl ca-certificates
        fi
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if [ "${1:-}" = "with-lints" ] && command -v rustup >/dev/null 2>&1; then
        local component
        for component in rustfmt clippy; do
            if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
                rustup component add "$component"
            fi
        done
    fi
}

# chinwag_setup [with-tests]: everything for building (and, with-tests, testing).
chinwag_setup() {
    case "$(uname -s)" in
        Linux)
            if command -v apt-get >/dev/null 2>&1; then
                local packages=("${CHINWAG_BUILD_PACKAGES[@]}" "${CHINWAG_RUN_PACKAGES[@]}")
                if [ "${1:-}" = "with-tests" ]; then
                    packages+=("${CHINWAG_TEST_PACKAGES[@]}")
                fi
                chinwag_install_packages "${packages[@]}"
            else
                chinwag_say "not a Debian or Ubuntu system: install a C compiler and pkg-config yourself"
            fi
            ;;
        Darwin)
            command -v cc >/dev/null 2>&1 || chinwag_say "install the Xcode command line tools: xcode-select --install"
            ;;
        MINGW* | MSYS* | CYGWIN*)
            chinwag_say "on Windows install Rust with rustup and the Visual Studio C++ build tools"
            ;;
    esac
    if [ "${1:-}" = "with-tests" ]; then
        chinwag_install_rust with-lints
    else
        chinwag_install_rust
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    chinwag_setup "${1:-with-tests}"
fi

#!/usr/bin/env bash
# Installs the Debian packages Kensa needs that are missing, and nothing else.
#   scripts/install_system_packages.sh          redis-server (for `make run`)
#   scripts/install_system_packages.sh --test   redis-server, chromium, ffmpeg and mosquitto (for `make test`)
# ffmpeg only serves the cameras of the station tests: at run time OpenCV's wheel brings its own FFmpeg.
# mosquitto is the MQTT broker the station tests start (a station's MQTT sink talks to the plant's own broker).
# Fast when everything is present: it only looks with `command -v`, and runs `apt-get update` only when an
# install fails without it (a fresh image has empty package lists).
set -euo pipefail

want_browser=0
for arg in "$@"; do
    case "$arg" in
        --test) want_browser=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "install_system_packages.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [[ $want_browser == 1 ]] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    missing+=(chromium)
fi
if [[ $want_browser == 1 ]] && ! command -v ffmpeg >/dev/null 2>&1; then
    missing+=(ffmpeg)
fi
if [[ $want_browser == 1 ]] && ! command -v mosquitto >/dev/null 2>&1 && [[ ! -x /usr/sbin/mosquitto ]]; then
    missing+=(mosquitto)
fi

if [[ ${#missing[@]} == 0 ]]; then
    exit 0
fi

echo "Installing system packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install these yourself: ${missing[*]}" >&2
    exit 1
fi

as_root=()
if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
        # Without a terminal (CI) sudo must not stop to ask for a password.
        [[ -t 0 ]] || as_root=(sudo -n)
    else
        echo "error: not root and sudo is missing; install these as root: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run (unattended upgrades, a parallel install) instead of failing on its lock.
apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)

if ! "${as_root[@]}" apt-get install "${apt_opts[@]}" "${missing[@]}"; then
    echo "apt-get install failed; refreshing package lists and trying again"
    "${as_root[@]}" apt-get update -q -o DPkg::Lock::Timeout=600
    "${as_root[@]}" apt-get install "${apt_opts[@]}" "${missing[@]}"
fi

for pkg in "${missing[@]}"; do
    case "$pkg" in
        redis-server) command -v redis-server >/dev/null 2>&1 ;;
        chromium) command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ;;
        ffmpeg) command -v ffmpeg >/dev/null 2>&1 ;;
        mosquitto) command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] ;;
    esac || { echo "error: $pkg was installed but its command is not on PATH" >&2; exit 1; }
done

#!/usr/bin/env bash
# Make sure a system program is present: ensure-system-package.sh COMMAND DEBIAN_PACKAGE
# Installs it with apt-get when missing and permitted (root, or passwordless sudo); otherwise
# prints one clear line and exits 0, so the tests that need it skip with a reason.
set -u
cmd=$1
pkg=$2
if command -v "$cmd" >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: '$cmd' not found and apt-get is not available; install the '$pkg' package by hand." >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "note: '$cmd' not found; run 'sudo apt-get install $pkg' (tests needing it will skip)." >&2
    exit 0
fi
echo "installing $pkg (for '$cmd') with apt-get..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
    || echo "note: could not install $pkg; tests needing '$cmd' will skip." >&2
exit 0

#!/usr/bin/env bash
# Installs the native prerequisites TorchSharp needs on this machine, idempotently.
# TorchSharp 0.107's libtorch needs libstdc++ with GLIBCXX_3.4.32. Debian 12 ships 3.4.30; there we add
# a low-pinned Debian 13 (trixie) source and take libstdc++6 (and the libc6 it needs) from it.
# Ubuntu 24.04 / Debian 13 already have it and nothing is done.
set -euo pipefail

have_glibcxx() {
  local lib
  for lib in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /lib/x86_64-linux-gnu/libstdc++.so.6; do
    [ -e "$lib" ] && grep -aq 'GLIBCXX_3.4.32' "$lib" && return 0
  done
  return 1
}

if have_glibcxx; then
  echo "setup: libstdc++ already provides GLIBCXX_3.4.32"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

# shellcheck source=/dev/null  # /etc/os-release is the host's, not part of this repository
. /etc/os-release
if [ "${ID:-}" != "debian" ]; then
  echo "setup: libstdc++ lacks GLIBCXX_3.4.32 and this is not Debian (${PRETTY_NAME:-unknown});" >&2
  echo "setup: install a libstdc++6 from GCC 13 or later (Ubuntu 24.04 / Debian 13 have it)." >&2
  exit 1
fi

echo "setup: adding a low-pinned Debian trixie source for libstdc++6 (GLIBCXX_3.4.32)"
$SUDO tee /etc/apt/sources.list.d/lens-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
$SUDO tee /etc/apt/preferences.d/lens-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq -o Acquire::Retries=3
$SUDO apt-get install -y -qq -t trixie libstdc++6 >/dev/null
have_glibcxx || { echo "setup: libstdc++6 from trixie still lacks GLIBCXX_3.4.32" >&2; exit 1; }
echo "setup: libstdc++6 with GLIBCXX_3.4.32 installed"

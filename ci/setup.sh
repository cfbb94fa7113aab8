#!/usr/bin/env bash
# Installs the native prerequisites TorchSharp needs on this machine, idempotently.
# TorchSharp 0.107's libtorch needs libstdc++ with GLIBCXX_3.4.32. Debian 12 ships 3.4.30; there we add
# a low-pinned Debian 13 (trixie) source and take libstdc++6 (and the libc6 it needs) from it.
# Ubuntu 24.04 / Debian 13 already have it and nothing is done.
# The trixie source uses the Debian mirror this machine's apt already uses (the first http(s) `URIs:` of
# /etc/apt/sources.list.d/*.sources, else the first `deb URL` of /etc/apt/sources.list, whose path ends in /debian);
# deb.debian.org only when none is configured.
#   ci/setup.sh --print-mirror   prints that mirror and exits (LENS_APT_DIR replaces /etc/apt, for tests)
set -euo pipefail

apt_dir="${LENS_APT_DIR:-/etc/apt}"

# The machine's own Debian archive mirror: URIs of deb822 .sources files (not our own lens-trixie.sources), then
# one-line `deb [options] URL suite ...` entries; only http(s) URLs whose path is .../debian (not debian-security).
debian_mirror() {
  local f uri
  {
    for f in "$apt_dir"/sources.list.d/*.sources; do
      if [ ! -f "$f" ] || [ "$(basename "$f")" = "lens-trixie.sources" ]; then continue; fi
      awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
    for f in "$apt_dir"/sources.list "$apt_dir"/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if (i <= NF) print $i }' "$f"
    done
  } | while read -r uri; do
    uri="${uri%/}"
    case "$uri" in
      http://*/debian | https://*/debian) echo "$uri"; break ;;
    esac
  done | head -n 1
}

mirror="$(debian_mirror || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
if [ "${1:-}" = "--print-mirror" ]; then
  echo "$mirror"
  exit 0
fi

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

echo "setup: adding a low-pinned Debian trixie source from $mirror for libstdc++6 (GLIBCXX_3.4.32)"
$SUDO tee "$apt_dir/sources.list.d/lens-trixie.sources" >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
$SUDO tee "$apt_dir/preferences.d/lens-trixie" >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq -o Acquire::Retries=3
$SUDO apt-get install -y -qq -t trixie libstdc++6 >/dev/null
have_glibcxx || { echo "setup: libstdc++6 from trixie still lacks GLIBCXX_3.4.32" >&2; exit 1; }
echo "setup: libstdc++6 with GLIBCXX_3.4.32 installed"

#!/usr/bin/env bash
# Validates the CI templates and the shell scripts, installing the validators where missing (idempotent):
#   action-validator (npm @action-validator/cli, pinned) on every ci/github/*.yml workflow, and
#   the Debian package shellcheck on ci/*.sh, .ci/run and ./lens.
# nodejs/npm and shellcheck come from apt when absent (root or sudo); action-validator goes to $LENS_CI_TOOLS
# (default ~/.cache/lens-ci-tools), not into the repository. One line per check: "check-scripts: ok|FAIL NAME";
# an installation that fails is a FAIL line naming what failed. Exit status: non-zero when any check failed.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
av_version=0.6.0
tools="${LENS_CI_TOOLS:-$HOME/.cache/lens-ci-tools}"
fails=0
fail() { echo "check-scripts: FAIL $*"; fails=$((fails + 1)); }
ok() { echo "check-scripts: ok   $*"; }

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
apt_updated=0
apt_install() {  # apt_install PACKAGE...: prints apt's output only when it fails
  local log
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get on this machine; install $* yourself"; return 1; fi
  if [ "$apt_updated" = "0" ]; then
    log="$($SUDO apt-get update -qq -o Acquire::Retries=3 2>&1)" || { echo "$log" | tail -5; return 1; }
    apt_updated=1
  fi
  log="$($SUDO apt-get install -y -qq --no-install-recommends "$@" 2>&1)" || { echo "$log" | tail -5; return 1; }
}

# --- shellcheck ---
have_shellcheck=1
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "check-scripts: installing shellcheck (apt)"
  if ! why="$(apt_install shellcheck)" || ! command -v shellcheck >/dev/null 2>&1; then
    fail "install shellcheck from apt: ${why:-shellcheck still not on PATH}"
    have_shellcheck=0
  fi
fi
scripts=(ci/*.sh ci/deploy/*.sh .ci/run lens)
if [ "$have_shellcheck" = "1" ]; then
  echo "check-scripts: $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
  for s in "${scripts[@]}"; do
    if [ ! -f "$s" ]; then fail "shellcheck $s: no such file"; continue; fi
    if out="$(shellcheck -x "$s" 2>&1)"; then ok "shellcheck $s"; else fail "shellcheck $s:"; echo "$out"; fi
  done
fi

# --- action-validator ---
av="$tools/node_modules/.bin/action-validator"
avpkg="$tools/node_modules/@action-validator/cli/package.json"
have_av=1
installed_av() { [ -x "$av" ] && [ "$(node -p "require('$avpkg').version" 2>/dev/null)" = "$av_version" ]; }
if ! installed_av; then
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "check-scripts: installing nodejs and npm (apt)"
    why="$(apt_install nodejs npm)" || fail "install nodejs and npm from apt: $why"
  fi
  if command -v npm >/dev/null 2>&1; then
    echo "check-scripts: installing @action-validator/cli@$av_version (npm) into $tools"
    mkdir -p "$tools"
    why="$(npm install --prefix "$tools" --no-audit --no-fund --no-save --loglevel=error "@action-validator/cli@$av_version" 2>&1)" \
      || fail "install @action-validator/cli@$av_version from npm: $(tail -5 <<<"$why")"
  fi
  installed_av || { [ "$fails" -gt 0 ] || fail "install @action-validator/cli@$av_version: $av missing after npm install"; have_av=0; }
fi
workflows=(ci/github/*.yml)
if [ "$have_av" = "1" ]; then
  echo "check-scripts: action-validator $av_version"
  if [ ! -f "${workflows[0]}" ]; then fail "action-validator: no workflow files under ci/github/"; fi
  for w in "${workflows[@]}"; do
    [ -f "$w" ] || continue
    if out="$("$av" "$w" 2>&1)"; then ok "action-validator $w"; else fail "action-validator $w:"; echo "$out"; fi
  done
fi

if [ "$fails" -gt 0 ]; then
  echo "check-scripts: $fails check(s) failed"
  exit 1
fi
echo "check-scripts: every workflow and script passes its validator"

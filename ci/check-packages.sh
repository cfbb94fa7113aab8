#!/usr/bin/env bash
# Packs the NuGet packages into a temporary local feed and uses them the way a user's repository does:
#   1. `dotnet pack` of DiffusionLens (src/Lens), DiffusionLens.Testing (src/Lens.Testing) and the lens tool
#      DiffusionLens.Cli (src/Lens.Cli) at a unique version (0.1.0-ci.<time>.<pid>: a stale cached package cannot
#      stand in for a broken one), built apart from the repository's bin/ and obj/ (--artifacts-path);
#   2. their metadata and files (ci/check-nupkgs.py): licence, readme, repository and commit, XML docs, source link,
#      dependencies (no TorchSharp backend, no test runner), the tool's DotnetToolSettings.xml, sizes under nuget.org's limit;
#   3. the Python reference maker (python/diffusion-lens-reference): py_compile and its pyproject;
#   4. samples/ (its own solution) restored from that feed with an isolated NuGet config (the feed + nuget.org), built and
#      tested: one line with its test counts, FAIL when any test failed or none ran;
#   5. `dotnet tool install` of the tool from the feed into a temporary --tool-path, then `lens sweep` on its embedded tiny model.
# One line per check: "check-packages: ok|FAIL NAME ..."; the packages of this version are removed from the NuGet cache at the end.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
fails=0
fail() { echo "check-packages: FAIL $*"; fails=$((fails + 1)); }
ok() { echo "check-packages: ok   $*"; }

# the sample's tests and the installed tool run libtorch: its native prerequisite first (idempotent; ci/test.sh does the same)
bash ci/setup.sh >/dev/null || { echo "check-packages: FAIL ci/setup.sh could not install the native prerequisites"; exit 1; }

version="0.1.0-ci.$(date -u +%Y%m%d%H%M%S).$$"
work="$(mktemp -d)"
feed="$work/feed"
cache="$(dotnet nuget locals global-packages --list | sed -n 's/^global-packages: //p')"
cleanup() {
  rm -rf "$work"
  if [ -n "$cache" ]; then
    for id in diffusionlens diffusionlens.testing diffusionlens.cli diffusionlens.cli.linux-x64; do
      rm -rf "${cache:?}/$id/$version"
      rmdir "$cache/$id" 2>/dev/null || true  # only when no other version is cached
    done
  fi
}
trap cleanup EXIT

# --- 1. pack ---
packed=1
t0=$SECONDS
for project in src/Lens/Lens.csproj src/Lens.Testing/Lens.Testing.csproj src/Lens.Cli/Lens.Cli.csproj; do
  if ! log="$(dotnet pack "$project" -c Release -o "$feed" --artifacts-path "$work/artifacts" -p:Version="$version" -p:ContinuousIntegrationBuild=true 2>&1)"; then
    fail "dotnet pack $project:"
    grep -E 'error|Error' <<<"$log" | sort -u | head -20
    packed=0
  fi
done
if [ "$packed" = "1" ]; then
  ok "dotnet pack: $(find "$feed" -name '*.nupkg' -printf '%f (%s bytes) ')in $((SECONDS - t0)) s"
fi

# --- 2. package metadata and files ---
if [ "$packed" = "1" ]; then
  python3 ci/check-nupkgs.py "$feed" "$version"
  fails=$((fails + $?))
fi

# --- 3. the Python reference maker ---
pkg=python/diffusion-lens-reference
if why="$(python3 -m py_compile fixtures/make_reference.py "$pkg"/src/diffusion_lens_reference/*.py 2>&1)" \
   && why="$(python3 - "$pkg" <<'PY' 2>&1
import sys, tomllib, pathlib, re
pkg = pathlib.Path(sys.argv[1])
p = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p["name"]), "bad project name"
assert re.fullmatch(r"\d+(\.\d+)*", p["version"]), "bad version"
module, func = p["scripts"]["lens-make-reference"].split(":")
src = (pkg / "src" / (module.replace(".", "/") + ".py")).read_text()
assert f"\ndef {func}(" in src, f"entry point {module}:{func} not defined"
assert (pkg / p["readme"]).is_file(), "readme missing"
PY
)"; then
  ok "python package $pkg: compiles, pyproject valid, entry point lens-make-reference defined"
else
  fail "python package $pkg: $why"
fi

# --- 4. the sample consumer, from the feed alone (and nuget.org for third-party packages) ---
cat >"$work/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local-feed" value="$feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="local-feed"><package pattern="DiffusionLens*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
XML
if [ "$packed" = "1" ]; then
  results="$work/sample-results"
  t0=$SECONDS
  if ! log="$(dotnet restore samples/DiffusionLens.Sample.sln --configfile "$work/nuget.config" -p:LensPackageVersion="$version" 2>&1)"; then
    fail "sample restore from the local feed:"; grep -E 'error' <<<"$log" | sort -u | head -10
  elif ! log="$(dotnet build samples/DiffusionLens.Sample.sln -c Release --no-restore -p:LensPackageVersion="$version" 2>&1)"; then
    fail "sample build against the packages:"; grep -E 'error' <<<"$log" | sort -u | head -20
  else
    dotnet test samples/DiffusionLens.Sample.sln -c Release --no-build -p:LensPackageVersion="$version" -- --report-xunit-trx --results-directory "$results" >"$work/sample.log" 2>&1
    status=$?
    if counts="$(python3 - "$results" <<'PY'
import sys, glob, xml.etree.ElementTree as ET
p = f = t = 0
for path in glob.glob(sys.argv[1] + "/**/*.trx", recursive=True):
    c = ET.parse(path).getroot().find(".//{*}ResultSummary/{*}Counters")
    t += int(c.get("total", 0)); p += int(c.get("passed", 0))
    f += sum(int(c.get(k, 0)) for k in ("failed", "error", "timeout", "aborted"))
print(p, f, t - p - f)
PY
)"; then
      read -r sp sf ss <<<"$counts"
      if [ "$status" = "0" ] && [ "$sf" = "0" ] && [ "$sp" -gt 0 ]; then
        ok "sample tests $sp passed, $sf failed, $ss skipped (samples/, packages $version, $((SECONDS - t0)) s)"
      else
        fail "sample tests $sp passed, $sf failed, $ss skipped (exit $status):"
        grep -E '^(failed|error)|Assert|Exception' "$work/sample.log" | head -30
      fi
    else
      fail "sample tests: no TRX report (exit $status):"; tail -20 "$work/sample.log"
    fi
  fi
fi

# --- 5. the tool: install from the feed, run a sweep on its embedded model ---
if [ "$packed" = "1" ]; then
  tools="$work/tools"
  t0=$SECONDS
  if ! log="$(dotnet tool install DiffusionLens.Cli --version "$version" --tool-path "$tools" --configfile "$work/nuget.config" 2>&1)"; then
    fail "dotnet tool install DiffusionLens.Cli from the feed:"; tail -10 <<<"$log"
  else
    installed=$((SECONDS - t0))
    t0=$SECONDS
    out="$work/sweep"
    if log="$("$tools/lens" sweep --prompt "A few people are in the ocean splashing around" --layers 0,11 --steps 2 --out "$out" --quiet 2>&1)" \
       && [ -f "$out/layer-00.png" ] && [ -f "$out/layer-11.png" ] && [ -f "$out/grid.png" ] && [ -f "$out/manifest.json" ]; then
      ok "dotnet tool install ($installed s) + lens sweep on the embedded tiny model ($((SECONDS - t0)) s): layer-00.png, layer-11.png, grid.png, manifest.json"
    else
      fail "lens sweep from the installed tool: ${log:-the expected files are missing in $out}"
    fi
  fi
fi

if [ "$fails" -gt 0 ]; then
  echo "check-packages: $fails check(s) failed"
  exit 1
fi
echo "check-packages: the packages pack, carry their metadata, and work from a local feed (sample tests and the lens tool)"

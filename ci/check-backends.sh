#!/usr/bin/env bash
# Checks the TorchBackend switch (Directory.Build.props, Directory.Build.targets) without restoring anything: MSBuild only
# evaluates the project (-getItem) and runs the switch's own check target. In an application (src/Lens.Cli, LensTorchHost)
# each allowed value must select exactly one TorchSharp package at the pinned version (cpu -> TorchSharp-cpu,
# cuda -> TorchSharp-cuda-linux, managed -> TorchSharp), no value must mean cpu; the library (src/Lens, the DiffusionLens
# package) must reference the managed TorchSharp alone under every value (its users choose the backend); and an
# unknown value must fail with a message naming the allowed values.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
app=src/Lens.Cli/Lens.Cli.csproj
library=src/Lens/Lens.csproj
version=0.107.0
fails=0

# prints "Identity Version" of every TorchSharp/libtorch PackageReference PROJECT selects for the given arguments
torch_packages() {  # torch_packages PROJECT [msbuild arguments...]
  local json project="$1"
  shift
  json="$(dotnet msbuild "$project" -nologo -t:LensCheckTorchBackend -getItem:PackageReference "$@" 2>&1)" || { echo "$json" >&2; return 1; }
  python3 -c '
import json, sys
items = json.loads(sys.stdin.read())["Items"]["PackageReference"]
for i in items:
    if i["Identity"].lower().startswith(("torchsharp", "libtorch")):
        print(i["Identity"], i.get("Version", ""))
' <<<"$json"
}

expect() {  # expect PROJECT LABEL EXPECTED-PACKAGE [msbuild arguments...]
  local project="$1" label="$2" want="$3" got
  shift 3
  label="$(basename "$project" .csproj) $label"
  if ! got="$(torch_packages "$project" "$@")"; then
    echo "check-backends: FAIL $label: msbuild could not evaluate $project"
    fails=$((fails + 1)); return
  fi
  if [ "$got" = "$want $version" ]; then
    echo "check-backends: ok   $label -> $got"
  else
    echo "check-backends: FAIL $label: expected exactly '$want $version', got '${got//$'\n'/, }'"
    fails=$((fails + 1))
  fi
}

expect "$app" "(default)" TorchSharp-cpu
expect "$app" "TorchBackend=cpu" TorchSharp-cpu -p:TorchBackend=cpu
expect "$app" "TorchBackend=cuda" TorchSharp-cuda-linux -p:TorchBackend=cuda
expect "$app" "TorchBackend=managed" TorchSharp -p:TorchBackend=managed
expect "$library" "(default)" TorchSharp
expect "$library" "TorchBackend=cuda" TorchSharp -p:TorchBackend=cuda

# an unknown value: non-zero exit and one error naming the value and every allowed one
if msg="$(dotnet msbuild "$app" -nologo -t:LensCheckTorchBackend -p:TorchBackend=gpu 2>&1)"; then
  echo "check-backends: FAIL TorchBackend=gpu: msbuild succeeded, expected an error"
  fails=$((fails + 1))
elif grep -q "TorchBackend 'gpu' is not one of the allowed values: cpu .*cuda .*managed " <<<"$msg"; then
  echo "check-backends: ok   TorchBackend=gpu -> error: ${msg#*error : }" | head -1
else
  echo "check-backends: FAIL TorchBackend=gpu: msbuild failed without naming the allowed values:"
  echo "$msg"
  fails=$((fails + 1))
fi

if [ "$fails" -gt 0 ]; then
  echo "check-backends: $fails check(s) failed"
  exit 1
fi
echo "check-backends: the TorchBackend switch selects the right package for cpu, cuda and managed; the library stays on managed TorchSharp"

#!/usr/bin/env bash
# Runs the whole test suite (the README's test command): native prerequisites, then `dotnet test` over the
# solution, then one summary line "N passed, N failed, N skipped" counted from the TRX reports.
#   ci/test.sh [--cuda] [test application options...]
# --cuda (a GPU host with the .NET SDK and PyTorch): builds with -p:TorchBackend=managed into artifacts/managed (apart
# from the CPU build's bin/ and obj/ folders) and runs on PyTorch's CUDA libtorch: torch/lib from LENS_TORCH_LIB, else
# from the python3 on PATH, exported as LENS_TORCH_LIB and put on LD_LIBRARY_PATH (ci/cuda-env.sh).
# Other arguments go to the test applications, e.g. --filter-class 'DiffusionLens.Tests.Parity.UNetParityTests'.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
cuda=0
args=()
for a in "$@"; do
  if [ "$a" = "--cuda" ]; then cuda=1; else args+=("$a"); fi
done
build=()
if [ "$cuda" = "1" ]; then
  # shellcheck source=ci/cuda-env.sh
  . ci/cuda-env.sh
  lens_cuda_env test || exit 2
  build=(-p:TorchBackend=managed --artifacts-path "$root/artifacts/managed")
fi
bash ci/setup.sh || exit 1
if ! command -v chromium >/dev/null 2>&1 && [ "${LENS_NO_CHROMIUM:-}" != "1" ]; then
  # the HTML report test renders in headless Chromium; without it that test is skipped with the reason
  if [ "$(id -u)" = "0" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || echo "test: chromium could not be installed; the report rendering test will be skipped"
  fi
fi
results="$root/artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"
dotnet test DiffusionLens.sln -c Release "${build[@]}" -- --report-xunit-trx --results-directory "$results" "${args[@]}"
status=$?
python3 - "$results" <<'PY' || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
import sys, glob, xml.etree.ElementTree as ET
p = f = s = 0
files = glob.glob(sys.argv[1] + "/**/*.trx", recursive=True)
for path in files:
    c = ET.parse(path).getroot().find(".//{*}ResultSummary/{*}Counters")
    total = int(c.get("total", 0)); passed = int(c.get("passed", 0)); failed = int(c.get("failed", 0)) + int(c.get("error", 0)) + int(c.get("timeout", 0)) + int(c.get("aborted", 0))
    p += passed; f += failed; s += total - passed - failed
if not files:
    sys.exit(1)
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $status

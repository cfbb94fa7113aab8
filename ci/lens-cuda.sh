#!/usr/bin/env bash
# The lens CLI on a GPU host with the .NET SDK and PyTorch: like ./lens, but built with -p:TorchBackend=managed into
# artifacts/managed (the build ci/test.sh --cuda makes) and run on PyTorch's CUDA libtorch (ci/cuda-env.sh).
#   ci/lens-cuda.sh sweep --model DIR --prompt TEXT --device cuda --dtype float16 --out out/sweep
#   ci/lens-cuda.sh --app-dir     # prints the folder holding lens.dll (for ci/bench.py --app)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=ci/cuda-env.sh
. "$root/ci/cuda-env.sh"
lens_cuda_env lens-cuda >&2 || exit 2
bash "$root/ci/setup.sh" >/dev/null || exit 1
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
app="$root/artifacts/managed/bin/Lens.Cli/release"
dotnet build "$root/src/Lens.Cli" -c Release -p:TorchBackend=managed --artifacts-path "$root/artifacts/managed" -v q -nologo >&2 \
  || { echo "lens-cuda: building src/Lens.Cli with -p:TorchBackend=managed failed" >&2; exit 1; }
if [ "${1:-}" = "--app-dir" ]; then
  echo "$app"
  exit 0
fi
exec dotnet "$app/lens.dll" "$@"

#!/usr/bin/env bash
# Inside the pack made by ci/gpu-pack-judge.sh (copied there as run.sh): runs the CLIP judge's tests on ONNX Runtime's
# CUDA provider on a CUDA host with PyTorch (cu13 wheels) and no .NET SDK.
#   run.sh PROVIDER   PROVIDER: .carry/ort-cuda/providers_cuda.so.xz (or an unpacked libonnxruntime_providers_cuda.so)
# The provider's CUDA libraries come from PyTorch's pip packages (src/Lens/Judge/OnnxCudaLibraries.cs); no
# LD_LIBRARY_PATH is set.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
app="$here/app"
provider="${1:?run.sh needs the CUDA provider (providers_cuda.so.xz from ci/gpu-pack-judge.sh)}"
if [ ! -f "$app/libonnxruntime_providers_cuda.so" ]; then
  case "$provider" in
    *.xz) xz -dc "$provider" > "$app/libonnxruntime_providers_cuda.so" || exit 1 ;;
    *) cp "$provider" "$app/libonnxruntime_providers_cuda.so" || exit 1 ;;
  esac
fi
LENS_TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || exit 1
export LENS_TORCH_LIB LENS_REPO_ROOT="$here/repo"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
"$app/Findings.Tests" --show-live-output on \
  --filter-class 'DiffusionLens.Tests.Findings.JudgeCudaTests' \
  --filter-class 'DiffusionLens.Tests.Findings.JudgeFixtureTests' \
  --filter-class 'DiffusionLens.Tests.Findings.JudgeOnnxPlumbingTests' "${@:2}"

#!/usr/bin/env bash
# Runs on a CUDA host that has PyTorch (no .NET SDK needed), from the repository root, with .carry/gpu.tar.xz made by
# ci/gpu-pack.sh (and .carry/pylibs.tar.xz holding diffusers' sources for the fixture steps):
#   ci/gpu-test.sh [--make-cuda-references] [--make-judge] [--tests] [--bench]
# TorchSharp (managed only) runs on PyTorch's own libtorch: LD_LIBRARY_PATH points at torch/lib.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
work="${LENS_GPU_WORK:-/tmp/lens-gpu}"
out="${OUT:-$work/out}"
mkdir -p "$work" "$out"
[ -d "$work/gpu" ] || tar -C "$work" -xJf .carry/gpu.tar.xz
if [ -f .carry/pylibs.tar.xz ] && [ ! -d "$work/py" ]; then mkdir -p "$work/py" && tar -C "$work/py" -xJf .carry/pylibs.tar.xz; fi
export PYTHONPATH="$work/py${PYTHONPATH:+:$PYTHONPATH}"
torchlib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$work/gpu/dotnet:$PATH" DOTNET_ROOT="$work/gpu/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 LENS_REPO_ROOT="$root"
app="$work/gpu/app"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'

for step in "$@"; do
  case "$step" in
    --make-cuda-references)
      # diffusers' own CUDA outputs for the committed tiny models (float16 and float32), CPU-generator noise
      python3 fixtures/make_reference.py tiny --device cuda --dtype float16 2>&1 | grep -v -i "warn\|deprecat" | tail -8
      python3 fixtures/make_reference.py tiny --device cuda --dtype float32 2>&1 | grep -v -i "warn\|deprecat" | tail -8
      tar -cJf "$out/cuda-references.tar.xz" fixtures/references/*-cuda-* ;;
    --make-judge)
      python3 fixtures/export_clip_onnx.py --tiny fixtures/judge/tiny-clip --tokenizer-dir fixtures/models/sd-tiny-12/tokenizer 2>&1 | tail -12
      tar -cJf "$out/tiny-clip.tar.xz" fixtures/judge/tiny-clip ;;
    --tests)
      # the whole Parity suite; references recorded on CUDA run here (they are skipped where CUDA is absent)
      # shellcheck disable=SC2086
      dotnet "$app/Parity.Tests.dll" --show-live-output off ${LENS_TEST_ARGS:-} 2>&1 | tee "$out/gpu-tests.log" | grep -E "^(failed|skipped) |total:|failed:|succeeded:|skipped:|worst" | head -60 ;;
    --bench)
      python3 ci/bench.py --app "$app" --out "$out" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done

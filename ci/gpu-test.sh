#!/usr/bin/env bash
# Runs on a CUDA host that has PyTorch (no .NET SDK needed), from the repository root, with .carry/gpu.tar.xz made by
# ci/gpu-pack.sh (and .carry/pylibs.tar.xz holding diffusers' sources for the fixture steps):
#   ci/gpu-test.sh [--make-cuda-references] [--add-truth] [--make-judge] [--judge-cuda] [--tests] [--bench] [--profile]
#                  [--kernel-trace] [--conv-layout]
# TorchSharp (managed only) runs on PyTorch's own libtorch: the apps find torch/lib themselves (LENS_TORCH_LIB, set
# here from python3's torch; see src/Lens/TorchRuntime.cs); LD_LIBRARY_PATH is set only if that fails.
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
export LENS_TORCH_LIB="$torchlib"
export PATH="$work/gpu/dotnet:$PATH" DOTNET_ROOT="$work/gpu/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 LENS_REPO_ROOT="$root"
app="$work/gpu/app"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "transformers", transformers.__version__)'
info="$(dotnet "$app/lens.dll" info 2>&1)"
echo "lens info: $info"
if ! grep -q '"cuda_available":true' <<<"$info"; then
  echo "gpu-test: the apps did not load CUDA from LENS_TORCH_LIB alone; falling back to LD_LIBRARY_PATH=$torchlib" >&2
  export LD_LIBRARY_PATH="$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  dotnet "$app/lens.dll" info
fi

for step in "$@"; do
  case "$step" in
    --judge-cuda)
      # the CLIP judge on ONNX Runtime's CUDA provider (.carry/judge.tar.xz and .carry/ort-cuda from ci/gpu-pack-judge.sh)
      [ -d "$work/judge" ] || tar -C "$work" -xJf .carry/judge.tar.xz
      bash "$work/judge/run.sh" .carry/ort-cuda/providers_cuda.so.xz 2>&1 | tee "$out/judge-cuda.log" | grep -E "^(failed|skipped) |CUDA vs CPU|total:|failed:|succeeded:|skipped:" ;;
    --make-cuda-references)
      # diffusers' own CUDA float16 outputs for the committed tiny models on this GPU (folders *-cuda-float16-<gpu>),
      # with the float32 truth and diffusers' own error against it (CUDA float32 is gated by the CPU references)
      python3 fixtures/make_reference.py tiny --device cuda --dtype float16 2>&1 | grep -v -i "warn\|deprecat" | tail -12
      tar -cJf "$out/cuda-references.tar.xz" fixtures/references/*-cuda-* ;;
    --add-truth)
      # (re)computes the float32 truth and diffusers' own error for every low-precision reference (e.g. recorded earlier
      # on another GPU); the same-noise truth lands in the CPU float32 references (truth_for_<dtype>.* keys)
      refs=()
      for d in fixtures/references/*-cuda-float16*; do [ -f "$d/reference.json" ] && refs+=("$d"); done
      python3 fixtures/make_reference.py truth "${refs[@]}" 2>&1 | grep -v -i "warn\|deprecat\|it/s" | tail -20
      tar -cJf "$out/references.tar.xz" fixtures/references ;;
    --make-judge)
      python3 fixtures/export_clip_onnx.py --tiny fixtures/judge/tiny-clip --tokenizer-dir fixtures/models/sd-tiny-12/tokenizer --share-tokenizer 2>&1 | tail -12
      tar -cJf "$out/tiny-clip.tar.xz" fixtures/judge/tiny-clip ;;
    --tests)
      # the whole Parity suite; references recorded on CUDA run here (they are skipped where CUDA is absent)
      # shellcheck disable=SC2086
      dotnet "$app/Parity.Tests.dll" --show-live-output "${LENS_TEST_LIVE:-off}" ${LENS_TEST_ARGS:-} 2>&1 | tee "$out/gpu-tests.log" | grep -E "^(failed|skipped) |total:|failed:|succeeded:|skipped:|worst" | head -60 ;;
    --bench)
      # the issue #11 table (SD then IF, ~6-7 min on an H200); LENS_BENCH_ARGS adds flags: --only sd|if|sdxl|flux, --quick, --profile
      # shellcheck disable=SC2086
      python3 ci/bench.py --app "$app" --out "$out" ${LENS_BENCH_ARGS:-} ;;
    --kernel-trace)
      # one denoising step kernel by kernel, diffusers vs C# (CUPTI; LENS_TRACE_ARGS adds flags, e.g. --kind if --identity)
      # shellcheck disable=SC2086
      python3 ci/kernel_trace.py --app "$app" --out "$out" ${LENS_TRACE_ARGS:-} ;;
    --conv-layout)
      # channels-last convolution weights against PyTorch's default in diffusers' own IF and SD UNets and VAE: same numbers?
      # time per call (the experiment behind Conv2d's weight layout; LENS_CONV_LAYOUT_ARGS adds flags, e.g. --only if)
      # shellcheck disable=SC2086
      python3 ci/conv_weight_layout.py ${LENS_CONV_LAYOUT_ARGS:-} 2>&1 | grep -v -i "warn" | tee "$out/conv-weight-layout.log" ;;
    --profile)
      # quick SD run with per-step host-queue vs synchronised step times (LENS_PROFILE=1); nothing appended
      python3 ci/bench.py --app "$app" --out "$out" --only sd --quick --profile --no-append ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done

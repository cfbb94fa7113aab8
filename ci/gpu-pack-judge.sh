#!/usr/bin/env bash
# Packs the CLIP judge's tests for a CUDA host without a .NET SDK, built against ONNX Runtime's CUDA package
# (-p:OnnxBackend=cuda: Microsoft.ML.OnnxRuntime.Gpu.Linux, CUDA 13 + cuDNN 9) and PyTorch's libtorch
# (-p:TorchBackend=managed). On the host, the provider finds the CUDA libraries of PyTorch's pip packages itself
# (src/Lens/Judge/OnnxCudaLibraries.cs), as the suite finds libtorch.
#   ci/gpu-pack-judge.sh [--cuda-arch 90]
# Outputs (ci/gpu-test.sh --judge-cuda runs them):
#   .carry/judge.tar.xz                  the Findings test app (self-contained, trimmed), ONNX Runtime without its
#                                        CUDA provider, and the fixtures the judge tests read
#   .carry/ort-cuda/providers_cuda.so.xz ONNX Runtime's CUDA provider with only the given GPU architecture's kernels
# The provider (284 MB, kernels for sm_75..sm_120) cannot travel within the device tool's 64 MiB; its cubins for other
# architectures are zeroed (ci/prune_fatbin.py), which changes nothing on a GPU of the kept architecture (the driver
# picks that architecture's cubin) and lets it compress to about 52 MB. Users whose feed serves the package need none
# of this: `dotnet test -p:OnnxBackend=cuda` on the GPU runner.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
arch=90
if [ "${1:-}" = "--cuda-arch" ]; then arch="${2:?--cuda-arch needs a number, e.g. 90 for H100/H200}"; fi
out="$root/.carry/judge"
rm -rf "$out" && mkdir -p "$out/repo/fixtures/models/sd-tiny-12" "$root/.carry/ort-cuda"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
tar -C "$root" --exclude=bin --exclude=obj -cf - global.json Directory.Build.props DiffusionLens.sln src tests fixtures/models/sd-tiny-12 \
  | tar -C "$build" -xf -
dotnet publish "$build/tests/Findings" -c Release -r linux-x64 -p:TorchBackend=managed -p:OnnxBackend=cuda -v q \
  --self-contained true -p:PublishTrimmed=true -p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true \
  -p:JsonSerializerIsReflectionEnabledByDefault=true -p:EventSourceSupport=true -o "$out/app"
provider="$out/app/libonnxruntime_providers_cuda.so"
[ -f "$provider" ] || { echo "gpu-pack-judge: the publish holds no libonnxruntime_providers_cuda.so" >&2; exit 1; }
python3 ci/prune_fatbin.py "$provider" "$build/providers_cuda.so" "$arch"
xz -9 -T2 -c "$build/providers_cuda.so" > "$root/.carry/ort-cuda/providers_cuda.so.xz"
# not loaded by the judge tests: TensorRT's provider, debugger/tracing natives, SkiaSharp (the PNG cross-check only)
rm -f "$provider" "$out/app/libonnxruntime_providers_tensorrt.so" "$out/app"/*.pdb "$out/app"/libmscordaccore.so \
  "$out/app"/libmscordbi.so "$out/app"/createdump "$out/app"/libSkiaSharp.so
cp ci/judge-cuda-run.sh "$out/run.sh"
(cd "$out/app" && rm -rf cs de es fr it ja ko pl pt-BR ru tr zh-Hans zh-Hant models)
cp -r fixtures/judge "$out/repo/fixtures/"
cp -r fixtures/models/sd-tiny-12/tokenizer "$out/repo/fixtures/models/sd-tiny-12/"
XZ_OPT=-9 tar -C "$root/.carry" -cJf "$root/.carry/judge.tar.xz" judge
rm -rf "$out"
ls -la "$root/.carry/judge.tar.xz" "$root/.carry/ort-cuda/providers_cuda.so.xz"

#!/usr/bin/env bash
# Packs what a CUDA host needs to run the suite and the benchmark without a .NET SDK (built here, carried there):
# the .NET runtime, and framework-dependent publishes of the Parity tests and the lens CLI built against the
# managed-only TorchSharp package (-p:TorchBackend=managed), which then loads PyTorch's own CUDA libtorch
# (ci/gpu-test.sh sets LD_LIBRARY_PATH to torch/lib). Output: .carry/gpu.tar.xz
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/.carry/gpu"
rm -rf "$out" && mkdir -p "$out/dotnet/host/fxr" "$out/dotnet/shared"
dr="$(dirname "$(readlink -f "$(command -v dotnet)")")"
fx="$(find "$dr/shared/Microsoft.NETCore.App" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)"
cp "$dr/dotnet" "$out/dotnet/"
cp -r "$dr/host/fxr/$(find "$dr/host/fxr" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)" "$out/dotnet/host/fxr/"
mkdir -p "$out/dotnet/shared/Microsoft.NETCore.App" && cp -r "$dr/shared/Microsoft.NETCore.App/$fx" "$out/dotnet/shared/Microsoft.NETCore.App/"
# debugger/tracing/alternative-GC natives are never loaded by the suite
(cd "$out/dotnet/shared/Microsoft.NETCore.App/$fx" && rm -f libmscordaccore.so libmscordbi.so libclrgcexp.so libclrgc.so \
  libcoreclrtraceptprovider.so createdump)
# build in a copy of the sources, so the CPU build's obj/ folders (another TorchSharp package) stay apart
build="$(mktemp -d)"
tar -C "$root" --exclude=bin --exclude=obj -cf - global.json Directory.Build.props DiffusionLens.sln src tests fixtures/models/sd-tiny-12 | tar -C "$build" -xf -
common=(-c Release -r linux-x64 -p:TorchBackend=managed -v q)
# one folder for the test app and the CLI (same dependencies); ONNX Runtime is left out (the GPU run does not judge)
dotnet publish "$build/tests/Parity" "${common[@]}" --self-contained false -o "$out/app"
dotnet publish "$build/src/Lens.Cli" "${common[@]}" --self-contained false -o "$out/app"
# The shared framework, trimmed to what the suite and the CLI use: a self-contained, trimmed publish of the test app
# (which references the CLI, so both apps' framework needs are roots; TrimMode=partial trims framework assemblies only)
# gives the trimmed framework assemblies, which replace the shared framework's; assemblies it dropped are left out.
# This keeps the device carry (64 MiB with the repository's fixtures) small; checked by running the whole Parity suite
# on the packed runtime (ci/gpu-pack.sh --check, on the CPU libtorch here).
# LENS_PACK_READYTORUN (issue #11; default all): trimming drops the shipped framework's precompiled code, which would
# leave everything JIT-compiled. "all" (the default) compiles the trimmed framework and the app ahead of time
# (crossgen2; 19 MB instead of 9.4). On one H200 host, back to back (ci/BENCHMARKS.md, 2026-12-01): as fast or faster
# in every phase of the SD sweep, loading 0.3-0.4 s sooner. "framework" compiles only the framework and the test
# platform, the library, the CLI and TorchSharp staying JIT-compiled; "off" nothing (the smallest pack, for a carry
# with every fixture). LENS_PACK_READYTORUN_ISA (e.g. x86-64-v3) lets the precompiled code use that instruction set
# (crossgen2 --instruction-set).
r2r=()
case "${LENS_PACK_READYTORUN:-all}" in
  off) ;;
  all|framework) r2r=(-p:PublishReadyToRun=true)
    [ -n "${LENS_PACK_READYTORUN_ISA:-}" ] && r2r+=("-p:PublishReadyToRunCrossgen2ExtraArgs=--instruction-set:$LENS_PACK_READYTORUN_ISA") ;;
  *) echo "gpu-pack: LENS_PACK_READYTORUN must be off, all or framework (got '$LENS_PACK_READYTORUN')" >&2; exit 2 ;;
esac
dotnet publish "$build/tests/Parity" "${common[@]}" --self-contained true -p:PublishTrimmed=true -p:TrimMode=partial \
  -p:SuppressTrimAnalysisWarnings=true -p:JsonSerializerIsReflectionEnabledByDefault=true -p:EventSourceSupport=true \
  "${r2r[@]}" -o "$build/trimmed"
# "framework": the app's own assemblies keep their JIT-compiled (IL-only) form from the framework-dependent publish
keep_il=()
[ "${LENS_PACK_READYTORUN:-all}" = framework ] && keep_il=(DiffusionLens.dll lens.dll TorchSharp.dll Parity.Tests.dll DiffusionLens.Testing.dll)
fxdir="$out/dotnet/shared/Microsoft.NETCore.App/$fx"
for f in "$fxdir"/*.dll; do
  n="$(basename "$f")"
  if [ -f "$build/trimmed/$n" ]; then cp "$build/trimmed/$n" "$f"; else rm -f "$f"; fi
done
# the trimmer also trims trimmable libraries (the test platform): take its consistent set for the app folder as well
for f in "$out/app"/*.dll; do
  n="$(basename "$f")"
  [[ " ${keep_il[*]} " == *" $n "* ]] && continue
  if [ -f "$build/trimmed/$n" ]; then cp "$build/trimmed/$n" "$f"; fi
done
rm -rf "$build" "$out/app/models" "$out"/app/libonnxruntime*.so
# satellite resource folders of the test platform (localised messages) and symbols are not needed to run
(cd "$out/app" && rm -rf cs de es fr it ja ko pl pt-BR ru tr zh-Hans zh-Hant ./*.pdb)
if [ "${1:-}" = "--check" ]; then
  # the packed runtime runs the whole Parity suite here, on the CPU libtorch of the TorchSharp-cpu package
  lib="$(find "$HOME"/.nuget/packages/libtorch-cpu-linux-x64 -mindepth 4 -maxdepth 4 -type d -path "*/runtimes/linux-x64/native" | sort -V | tail -1)"
  PATH="$out/dotnet:$PATH" DOTNET_ROOT="$out/dotnet" LENS_TORCH_LIB="$lib" LENS_REPO_ROOT="$root" \
    dotnet "$out/app/Parity.Tests.dll" --show-live-output off "${@:2}" > "$root/.carry/pack-check.log" 2>&1 \
    || { grep -E -A3 "^failed " "$root/.carry/pack-check.log" | head -40; echo "gpu-pack: the packed runtime failed the check (.carry/pack-check.log)" >&2; exit 1; }
  grep -E "total:|failed:|succeeded:|skipped:" "$root/.carry/pack-check.log"
fi
XZ_OPT=-9 tar -C "$root/.carry" -cJf "$root/.carry/gpu.tar.xz" gpu
rm -rf "$out"
ls -la "$root/.carry/gpu.tar.xz"

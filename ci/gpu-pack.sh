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
# the device run carries at most 64 MiB with the working tree: leave out framework parts the suite never loads
# (debugger/tracing/alternative-GC natives, XML, VB, networking, data, expressions), checked by running the whole
# Parity suite on this trimmed runtime. The GPU run therefore reads test results from the console, not TRX (XML).
(cd "$out/dotnet/shared/Microsoft.NETCore.App/$fx" && rm -f libmscordaccore.so libmscordbi.so libclrgcexp.so libclrgc.so \
  libcoreclrtraceptprovider.so Microsoft.VisualBasic.Core.dll Microsoft.VisualBasic.dll Microsoft.CSharp.dll \
  System.Data.Common.dll System.Private.DataContractSerialization.dll System.Private.Xml.dll System.Private.Xml.Linq.dll \
  System.Linq.Expressions.dll System.Linq.AsyncEnumerable.dll System.Text.Encoding.CodePages.dll System.Net.Http.dll \
  System.Net.Security.dll System.Net.Quic.dll System.Net.Mail.dll System.Net.WebSockets*.dll System.Net.HttpListener.dll \
  System.Net.Requests.dll System.Net.WebClient.dll System.IO.Compression.Brotli.dll libSystem.IO.Compression.Native.so)
# build in a copy of the sources, so the CPU build's obj/ folders (another TorchSharp package) stay apart
build="$(mktemp -d)"
tar -C "$root" --exclude=bin --exclude=obj -cf - global.json Directory.Build.props DiffusionLens.sln src tests fixtures/models/sd-tiny-12 | tar -C "$build" -xf -
common=(-c Release -r linux-x64 --self-contained false -p:TorchBackend=managed -v q)
# one folder for the test app and the CLI (same dependencies); ONNX Runtime is left out (the GPU run does not judge)
dotnet publish "$build/tests/Parity" "${common[@]}" -o "$out/app"
dotnet publish "$build/src/Lens.Cli" "${common[@]}" -o "$out/app"
rm -rf "$build" "$out/app/models" "$out"/app/libonnxruntime*.so
tar -C "$root/.carry" -cJf "$root/.carry/gpu.tar.xz" gpu
rm -rf "$out"
ls -la "$root/.carry/gpu.tar.xz"

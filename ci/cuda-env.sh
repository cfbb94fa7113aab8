# shellcheck shell=bash
# Sourced by ci/test.sh --cuda and ci/lens-cuda.sh: finds PyTorch's torch/lib (the CUDA libtorch that the managed-only
# TorchSharp build, -p:TorchBackend=managed, runs on) and exports LENS_TORCH_LIB and LD_LIBRARY_PATH.
#   LENS_TORCH_LIB  PyTorch's torch/lib folder; when unset, asked of the python3 on PATH (`import torch`).
# lens_cuda_env NAME: NAME prefixes the messages; returns non-zero with one message when torch/lib is not usable.
lens_cuda_env() {
  local who="$1" lib="${LENS_TORCH_LIB:-}" said
  if [ -z "$lib" ]; then
    if ! command -v python3 >/dev/null 2>&1; then
      echo "$who: --cuda needs PyTorch's torch/lib: no python3 on PATH; set LENS_TORCH_LIB=/path/to/site-packages/torch/lib" >&2
      return 1
    fi
    said="$(python3 -c 'import os, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible")
print("LENS_TORCH_LIB=" + os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>&1)"
    lib="$(sed -n 's/^LENS_TORCH_LIB=//p' <<<"$said" | tail -1)"
    if [ -z "$lib" ]; then
      echo "$who: --cuda needs PyTorch's torch/lib: \`python3 -c 'import torch'\` failed ($(tail -1 <<<"$said")); install PyTorch for $(command -v python3) or set LENS_TORCH_LIB=/path/to/site-packages/torch/lib" >&2
      return 1
    fi
    echo "$who: $(grep '^torch ' <<<"$said" | tail -1)"
  fi
  if [ ! -e "$lib/libtorch.so" ]; then
    echo "$who: LENS_TORCH_LIB=$lib is not PyTorch's torch/lib (no libtorch.so there)" >&2
    return 1
  fi
  if [ ! -e "$lib/libtorch_cuda.so" ]; then
    echo "$who: $lib has no libtorch_cuda.so: this PyTorch is a CPU-only build; --cuda needs a CUDA build of PyTorch" >&2
    return 1
  fi
  export LENS_TORCH_LIB="$lib"
  case ":${LD_LIBRARY_PATH:-}:" in
    *":$lib:"*) ;;
    *) export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
  echo "$who: LENS_TORCH_LIB=$LENS_TORCH_LIB (on LD_LIBRARY_PATH)"
}

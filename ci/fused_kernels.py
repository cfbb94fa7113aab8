#!/usr/bin/env python3
"""The fused GroupNorm kernels of src/Lens/Kernels/group_norm.cu against PyTorch's own ops, on the GPU host (issue #11).

The same source the C# library compiles with NVRTC is compiled here the same way (ctypes: NVRTC, then the CUDA driver
API on PyTorch's primary context and current stream) and checked three ways:
  kernels  every dtype and activation, with and without the scale-shift, at IF and odd shapes: the largest error
           against a float64 computation of the same formula, next to PyTorch's op chain's error; and the time of
           both at the IF-I-XL-sized UNet's largest resnet shape
  unets    diffusers' own UNet (SD 1.5-sized, IF-I-XL-sized; random weights, float16, 24 rows) with ResnetBlock2D's
           norm/scale-shift/activation chain replaced by the kernels: time per call against the stock UNet, and the
           error of both against the float32 UNet on the same input (the error-ratio criterion of the GPU runner)
  profile  where the stock and the fused IF UNet call spend their GPU time, by op and input shape

  PYTHONPATH=<diffusers src> python3 ci/fused_kernels.py [--only kernels,unets,profile] [--models sd,if] [--iters 10]
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import glob
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "Lens" / "Kernels" / "group_norm.cu"
sys.path.insert(0, str(HERE))

ACT = {"none": 0, "silu": 1, "gelu": 2, "gelu_tanh": 3, "mish": 4, "relu": 5}


def load_nvrtc(torch):
    lib = Path(torch.__file__).parent / "lib"
    site = lib.parent.parent
    cands = [os.environ.get("LENS_NVRTC")]
    cands += sorted(glob.glob(str(lib / "libnvrtc*.so*")))
    cands += sorted(glob.glob(str(site / "nvidia" / "**" / "libnvrtc.so*"), recursive=True))
    cands += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    errors = []
    for c in cands:
        if not c or "builtins" in c or "alt" in os.path.basename(c):
            continue
        try:
            return ctypes.CDLL(c), c
        except OSError as e:
            errors.append(f"{c}: {e}")
    raise RuntimeError("no NVRTC found: " + "; ".join(errors))


class Kernels:
    def __init__(self, torch):
        self.torch = torch
        self.nvrtc, self.nvrtc_path = load_nvrtc(torch)
        self.cu = ctypes.CDLL("libcuda.so.1")
        cu = self.cu
        cu.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
        cu.cuModuleGetFunction.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
        cu.cuModuleLoadData.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        torch.zeros(1, device="cuda")  # the runtime's primary context, current on this thread
        self._check(cu.cuInit(0), "cuInit")
        major, minor = torch.cuda.get_device_capability()
        t0 = time.perf_counter()
        image = self._compile(SRC.read_bytes(), f"sm_{major}{minor}")
        self.compile_s = time.perf_counter() - t0
        self.module = ctypes.c_void_p()
        self._check(cu.cuModuleLoadData(ctypes.byref(self.module), image), "cuModuleLoadData")
        self.fns = {}
        for kind in ("gn_stats", "gn_apply", "add_residual"):
            for sfx in ("f16", "bf16", "f32"):
                f = ctypes.c_void_p()
                self._check(cu.cuModuleGetFunction(ctypes.byref(f), self.module, f"{kind}_{sfx}".encode()), kind)
                self.fns[kind, sfx] = f

    def _check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: CUDA driver error {rc}")

    def _compile(self, src, arch):
        nv = self.nvrtc
        prog = ctypes.c_void_p()
        rc = nv.nvrtcCreateProgram(ctypes.byref(prog), src, b"group_norm.cu", 0, None, None)
        if rc:
            raise RuntimeError(f"nvrtcCreateProgram: {rc}")
        opts = [f"--gpu-architecture={arch}".encode(), b"--use_fast_math" if os.environ.get("LENS_FAST_MATH") else b"-std=c++17"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = nv.nvrtcCompileProgram(prog, len(opts), arr)
        n = ctypes.c_size_t()
        nv.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        nv.nvrtcGetProgramLog(prog, log)
        if rc:
            raise RuntimeError(f"nvrtcCompileProgram: {rc}\n{log.value.decode(errors='replace')}")
        if log.value.strip():
            print("NVRTC log:", log.value.decode(errors="replace"))
        nv.nvrtcGetCUBINSize(prog, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value)
        rc = nv.nvrtcGetCUBIN(prog, buf)
        if rc:
            raise RuntimeError(f"nvrtcGetCUBIN: {rc}")
        return buf

    def _launch(self, fn, grid, block, args):
        vals = []
        for a in args:
            vals.append(a)
        ptrs = (ctypes.c_void_p * len(vals))(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in vals])
        stream = self.torch.cuda.current_stream().cuda_stream
        self._check(self.cu.cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, stream, ptrs, None), "cuLaunchKernel")

    @staticmethod
    def _layout(x):
        """(x, 0) channels-first contiguous, (x, 1) channels-last; anything else is made channels-first"""
        if x.is_contiguous():
            return x, 0
        if x.permute(0, *range(2, x.dim()), 1).is_contiguous():
            return x, 1
        return x.contiguous(), 0

    def _sfx(self, x):
        torch = self.torch
        return {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32"}[x.dtype]

    @staticmethod
    def _blocks(total, width):
        return max(1, min((total // width + 255) // 256, 1 << 30))

    def group_norm(self, x, groups, weight, bias, eps, act="none", ss=None, bias_in=None):
        """act(group_norm(x + bias_in) * (1 + ss[:, :C]) + ss[:, C:2C]); x [N, C, ...] in either layout; ss [N, >= 2C, (1, 1)];
        bias_in [C] or [N, C]"""
        torch = self.torch
        sfx = self._sfx(x)
        x, nhwc = self._layout(x)
        n, c = x.shape[0], x.shape[1]
        hw = x.numel() // (n * c)
        stats = torch.empty(n * groups * 2, device=x.device, dtype=torch.float32)
        P = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)  # noqa: E731
        bstride = 0
        if bias_in is not None:
            bias_in = bias_in.contiguous()
            bstride = c if bias_in.dim() == 2 else 0
        self._launch(self.fns["gn_stats", sfx], n * groups, 512,
                     [P(x), P(stats), P(bias_in), ctypes.c_longlong(bstride), ctypes.c_int(c), ctypes.c_int(groups),
                      ctypes.c_longlong(hw), ctypes.c_int(nhwc), ctypes.c_float(eps)])
        y = torch.empty_like(x)
        ss_stride = 0
        if ss is not None:
            ss = ss.reshape(n, -1)
            assert ss.stride(1) == 1
            ss_stride = ss.stride(0)
        width = 8 if x.element_size() == 2 else 1
        total = x.numel()
        self._launch(self.fns["gn_apply", sfx], self._blocks(total, width), 256,
                     [P(x), P(y), P(stats), P(bias_in), ctypes.c_longlong(bstride), P(weight), P(bias), P(ss),
                      ctypes.c_longlong(ss_stride), ctypes.c_int(c), ctypes.c_int(groups), ctypes.c_longlong(hw),
                      ctypes.c_longlong(total), ctypes.c_int(nhwc), ctypes.c_int(ACT[act])])
        return y

    def residual(self, a, bias_a, r, bias_r, scale=1.0):
        """(a + bias_a[c] + r + bias_r[c]) / scale in a's layout"""
        sfx = self._sfx(a)
        a, nhwc = self._layout(a)
        r = r.contiguous(memory_format=self.torch.channels_last) if nhwc and a.dim() == 4 else r.contiguous() if not nhwc else r
        n, c = a.shape[0], a.shape[1]
        hw = a.numel() // (n * c)
        y = self.torch.empty_like(a)
        P = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)  # noqa: E731
        total = a.numel()
        self._launch(self.fns["add_residual", sfx], self._blocks(total, 8 if a.element_size() == 2 else 1), 256,
                     [P(a), P(bias_a), P(r), P(bias_r), P(y), ctypes.c_int(c), ctypes.c_longlong(hw), ctypes.c_longlong(total),
                      ctypes.c_int(nhwc), ctypes.c_float(scale)])
        return y


def reference(torch, x, groups, weight, bias, eps, act, ss, bias_in=None):
    """float64 of the kernel's formula"""
    F = torch.nn.functional
    x64 = x.double()
    if bias_in is not None:
        x64 = x64 + bias_in.double().reshape(x.shape[0] if bias_in.dim() == 2 else 1, x.shape[1], *[1] * (x.dim() - 2))
    y = F.group_norm(x64, groups, weight.double() if weight is not None else None, bias.double() if bias is not None else None, eps)
    if ss is not None:
        c = x.shape[1]
        s = ss.reshape(x.shape[0], -1).double()
        sh = [x.shape[0], c] + [1] * (x.dim() - 2)
        y = y * (1 + s[:, :c].reshape(sh)) + s[:, c:2 * c].reshape(sh)
    return torch_act(torch, y, act)


def torch_act(torch, y, act):
    F = torch.nn.functional
    return {"none": lambda v: v, "silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
            "mish": F.mish, "relu": F.relu}[act](y)


def stock(torch, x, groups, weight, bias, eps, act, ss, bias_in=None):
    """PyTorch's op chain as diffusers' ResnetBlock2D runs it, in x's dtype"""
    if bias_in is not None:
        x = x + bias_in.reshape(x.shape[0] if bias_in.dim() == 2 else 1, x.shape[1], *[1] * (x.dim() - 2))
    y = torch.nn.functional.group_norm(x, groups, weight, bias, eps)
    if ss is not None:
        c = x.shape[1]
        s = ss.reshape(x.shape[0], -1)
        sh = [x.shape[0], c] + [1] * (x.dim() - 2)
        y = y * (1 + s[:, :c].reshape(sh)) + s[:, c:2 * c].reshape(sh)
    return torch_act(torch, y, act)


def timed(torch, fn, iters):
    with torch.no_grad():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def check_kernels(torch, K, iters):
    g = torch.Generator("cpu").manual_seed(0)
    worst = 0.0
    shapes = [(24, 512, 64, 64), (24, 2048, 8, 8), (3, 64, 7, 5), (2, 96, 3, 3), (4, 320, 8, 8)]
    cl = torch.channels_last
    for shape in shapes:
        n, c = shape[:2]
        for dt in (torch.float16, torch.bfloat16, torch.float32):
            for act in ACT:
                for variant in ("plain", "ss", "bias", "rowbias+ss"):
                    for layout in ("nchw", "nhwc", "nlc"):
                        if layout != "nchw" and act not in ("none", "gelu"):
                            continue
                        x = (torch.randn(shape, generator=g) * 3 + 1).to("cuda", dt)
                        w = (torch.randn(c, generator=g) * 0.5 + 1).to("cuda", dt)
                        b = (torch.randn(c, generator=g) * 0.5).to("cuda", dt)
                        ss = (torch.randn(n, 2 * c, 1, 1, generator=g) * 0.3).to("cuda", dt) if "ss" in variant else None
                        bi = None
                        if variant == "bias":
                            bi = torch.randn(c, generator=g).to("cuda", dt)
                        elif variant == "rowbias+ss":
                            bi = torch.randn(n, c, generator=g).to("cuda", dt)
                        xin = x
                        if layout == "nhwc":
                            xin = x.contiguous(memory_format=cl)
                        elif layout == "nlc":
                            xin = x.reshape(n, c, -1).transpose(1, 2).contiguous().transpose(1, 2)
                        ref = reference(torch, x, 32, w, b, 1e-6, act, ss, bi)
                        ours = K.group_norm(xin, 32, w, b, 1e-6, act, ss, bi)
                        assert ours.stride() == xin.stride(), (ours.stride(), xin.stride())
                        theirs = stock(torch, x, 32, w, b, 1e-6, act, ss, bi)
                        eo = (ours.reshape(ref.shape).double() - ref).abs().max().item()
                        et = (theirs.double() - ref).abs().max().item()
                        ratio = eo / et if et > 0 else (0.0 if eo == 0 else float("inf"))
                        worst = max(worst, ratio if dt != torch.float32 else 0.0)
                        if (act == "gelu" and variant == "rowbias+ss") or ratio > 1.0:
                            print(f"  {str(tuple(shape)):18} {str(dt)[6:]:8} {act:9} {variant:10} {layout}: fused err {eo:.3g}, "
                                  f"torch err {et:.3g}, ratio {ratio:.2f}", flush=True)
            # residual
            for layout in ("nchw", "nhwc"):
                a = torch.randn(shape, generator=g).to("cuda", dt)
                r = torch.randn(shape, generator=g).to("cuda", dt)
                ba = torch.randn(c, generator=g).to("cuda", dt)
                br = torch.randn(c, generator=g).to("cuda", dt)
                sh = (-1, 1, 1)
                ref = (a.double() + ba.double().reshape(sh) + r.double() + br.double().reshape(sh)) / 1.5
                theirs = ((a + ba.reshape(sh)) + (r + br.reshape(sh))) / 1.5
                ain, rin = (a, r) if layout == "nchw" else (a.contiguous(memory_format=cl), r.contiguous(memory_format=cl))
                ours = K.residual(ain, ba, rin, br, 1.5)
                eo = (ours.double() - ref).abs().max().item()
                et = (theirs.double() - ref).abs().max().item()
                ratio = eo / et if et > 0 else (0.0 if eo == 0 else float("inf"))
                worst = max(worst, ratio if dt != torch.float32 else 0.0)
                if ratio > 1.0 or shape[0] == 24:
                    print(f"  residual {str(tuple(shape)):18} {str(dt)[6:]:8} {layout}: fused err {eo:.3g}, torch err {et:.3g}, ratio {ratio:.2f}")
    print(f"kernels: worst error ratio (fused / torch, low precision) {worst:.2f}")
    x = torch.randn(24, 1024, 64, 64, generator=g).to("cuda", torch.float16)
    w = torch.ones(1024, device="cuda", dtype=torch.float16)
    b = torch.zeros(1024, device="cuda", dtype=torch.float16)
    ss = torch.randn(24, 2048, 1, 1, generator=g).to("cuda", torch.float16) * 0.1
    for layout in ("nchw", "nhwc"):
        xin = x if layout == "nchw" else x.contiguous(memory_format=cl)
        for act, s, bi in (("gelu", None, None), ("gelu", ss, b), ("silu", None, None)):
            tf = timed(torch, lambda: K.group_norm(xin, 32, w, b, 1e-6, act, s, bi), iters)
            tt = timed(torch, lambda: stock(torch, xin, 32, w, b, 1e-6, act, s, bi), iters)
            print(f"  time (24,1024,64,64) f16 {layout} {act} ss={int(s is not None)} bias={int(bi is not None)}: fused {tf * 1e3:.3f} ms, "
                  f"torch {tt * 1e3:.3f} ms, {tf / tt:.2f}x; GroupNorm alone "
                  f"{timed(torch, lambda: torch.nn.functional.group_norm(xin, 32, w, b, 1e-6), iters) * 1e3:.3f} ms", flush=True)
        tf = timed(torch, lambda: K.residual(xin, b, xin, b, 1.0), iters)
        tt = timed(torch, lambda: (xin + b.reshape(-1, 1, 1)) + (xin + b.reshape(-1, 1, 1)), iters)
        print(f"  time residual {layout}: fused {tf * 1e3:.3f} ms, torch {tt * 1e3:.3f} ms")


def patch(torch, K):
    """replacement forwards: ResnetBlock2D with the fused chain (convolution biases folded into the kernels) and
    torch.nn.GroupNorm on CUDA 16-bit tensors"""
    from diffusers.models import resnet
    F = torch.nn.functional
    names = {torch.nn.SiLU: "silu", torch.nn.Mish: "mish", torch.nn.ReLU: "relu"}

    def act_of(m):
        if isinstance(m, torch.nn.GELU):
            return "gelu_tanh" if m.approximate == "tanh" else "gelu"
        return names[type(m)]

    def conv(m, x):
        return F.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)

    def forward(self, input_tensor, temb, *args, **kwargs):
        act = act_of(self.nonlinearity)
        n1, n2 = self.norm1, self.norm2
        hidden_states = K.group_norm(input_tensor, n1.num_groups, n1.weight, n1.bias, n1.eps, act)
        if self.upsample is not None:
            input_tensor = self.upsample(input_tensor)
            hidden_states = self.upsample(hidden_states)
        elif self.downsample is not None:
            input_tensor = self.downsample(input_tensor)
            hidden_states = self.downsample(hidden_states)
        hidden_states = conv(self.conv1, hidden_states)
        if self.time_emb_proj is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            temb = self.time_emb_proj(temb)[:, :, None, None]
        b1 = self.conv1.bias
        if self.time_embedding_norm == "scale_shift":
            hidden_states = K.group_norm(hidden_states, n2.num_groups, n2.weight, n2.bias, n2.eps, act, ss=temb.contiguous(), bias_in=b1)
        else:
            if self.time_embedding_norm == "default" and temb is not None:
                b1 = temb[:, :, 0, 0] + b1 if b1 is not None else temb[:, :, 0, 0]
            hidden_states = K.group_norm(hidden_states, n2.num_groups, n2.weight, n2.bias, n2.eps, act, bias_in=b1)
        hidden_states = conv(self.conv2, hidden_states)
        if self.conv_shortcut is not None:
            return K.residual(hidden_states, self.conv2.bias, conv(self.conv_shortcut, input_tensor), self.conv_shortcut.bias,
                              self.output_scale_factor)
        return K.residual(hidden_states, self.conv2.bias, input_tensor, None, self.output_scale_factor)

    gn_original = torch.nn.GroupNorm.forward

    def gn_forward(self, x):
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            return K.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return gn_original(self, x)

    stock_ = (resnet.ResnetBlock2D.forward, gn_original)
    fused_ = (forward, gn_forward)

    def use(which):
        resnet.ResnetBlock2D.forward, torch.nn.GroupNorm.forward = which
    return stock_, fused_, use


def profile(torch, label, fn):
    from torch.profiler import ProfilerActivity, profile as prof
    with torch.no_grad(), prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as p:
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
    print(f"  profile {label} (2 calls), by op and input shape:")
    print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=40,
                                                           max_shapes_column_width=70))
    print(f"  profile {label}, kernels:")
    print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=90))


def check_unets(torch, K, models, iters, with_profile):
    import bench
    from diffusers import UNet2DConditionModel
    stock_, fused_, use = patch(torch, K)
    cl = torch.channels_last
    for kind in models:
        cfg, tokens, dim = {"sd": (bench.SD_UNET, 77, 768), "if": (bench.IF_UNET, 77, 4096)}[kind]
        torch.manual_seed(0)
        with torch.device("cuda"):
            unet32 = UNet2DConditionModel(**cfg).eval()
        unet = copy.deepcopy(unet32).half()
        g = torch.Generator("cpu").manual_seed(0)
        c = unet.config
        rows = 24
        x = torch.randn(rows, c.in_channels, c.sample_size, c.sample_size, generator=g).cuda()
        emb = torch.randn(rows, tokens, dim, generator=g).cuda()
        t = torch.full((rows,), 801, device="cuda")
        with torch.no_grad():
            use(stock_)
            truth = unet32(x, t, encoder_hidden_states=emb).sample.double()
            del unet32
            torch.cuda.empty_cache()
            xh, eh = x.half(), emb.half()
            xcl = xh.contiguous(memory_format=cl)
            out, times = {}, {}
            for name, which, layout in (("stock", stock_, "nchw"), ("fused", fused_, "nchw"), ("fused-cl", fused_, "nhwc"),
                                        ("stock-cl", stock_, "nhwc"), ("stock again", stock_, "nchw")):
                use(which)
                unet.to(memory_format=cl if layout == "nhwc" else torch.contiguous_format)
                xi = xcl if layout == "nhwc" else xh
                call = lambda: unet(xi, t, encoder_hidden_states=eh).sample  # noqa: E731
                times[name] = timed(torch, call, iters)
                out[name] = call().double()
                if with_profile and kind == "if" and name in ("stock", "fused-cl"):
                    profile(torch, f"{kind} {name}", call)
            use(stock_)
        base = (times["stock"] + times["stock again"]) / 2
        print(f"{kind} UNet, {rows} rows, float16: " + ", ".join(f"{k} {v * 1e3:.1f} ms ({v / base:.3f}x)" for k, v in times.items()), flush=True)
        es = (out["stock"] - truth).abs()
        for k in out:
            e = (out[k] - truth).abs()
            print(f"  {k}: error against float32 max {e.max().item():.4g} mean {e.mean().item():.4g}, ratio of means to stock's "
                  f"{e.mean().item() / es.mean().item():.3f} (scale {truth.abs().max().item():.3g})", flush=True)
        del unet
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="kernels,unets")
    ap.add_argument("--models", default="sd,if")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    import torch
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    K = Kernels(torch)
    print(f"NVRTC {K.nvrtc_path}; compiled in {K.compile_s:.2f} s", flush=True)
    only = args.only.split(",")
    if "kernels" in only:
        check_kernels(torch, K, args.iters)
    if "unets" in only or "profile" in only:
        check_unets(torch, K, args.models.split(","), args.iters, "profile" in only)


if __name__ == "__main__":
    main()

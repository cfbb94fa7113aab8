#!/usr/bin/env python3
"""Convolution weights stored channels-last, activations channels-first, in diffusers' own models (issue #11).

A float16 NCHW convolution on cuDNN runs as three kernels: nchwToNhwc of the input, nchwToNhwc of the weight, the
NHWC implicit GEMM, and nhwcToNchw of the output. The kernel trace of an IF-I-XL-sized step (ci/kernel_trace.py) showed
the weight conversions dominating at the low resolutions (a 2048x2048x3x3 weight converted in ~0.2 ms, every call). This
measures, for every convolution call of one UNet call at the sweep's batch (12 layers: 24 rows):
  A  conv2d(x, w)                          (PyTorch's default)
  B  conv2d(x, w_cl).contiguous()          (the weight converted once; the output back to channels-first)
whether B gives A's numbers bit for bit, and their time (CUDA events); then one whole UNet call each way.

  python3 ci/conv_weight_layout.py [--only if,sd,vae] [--k 12] [--iters 10]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--only", default="if,sd,vae")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DConditionModel
    torch.set_grad_enabled(False)

    def timed(fn, iters):
        for _ in range(3):
            fn()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / iters  # ms

    def measure(label, model, call):
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        inputs = {}
        hooks = [m.register_forward_pre_hook(lambda mod, a, _i=i: inputs.setdefault(_i, a[0].detach().clone()))
                 for i, m in enumerate(convs)]
        with torch.no_grad():
            ref = call()
        for h in hooks:
            h.remove()
        ta = tb = 0.0
        same = 0
        worst = []
        with torch.no_grad():
            for i, m in enumerate(convs):
                if i not in inputs:
                    continue
                x = inputs[i]
                w_cl = m.weight.detach().contiguous(memory_format=torch.channels_last)

                def fa(m=m, x=x):
                    return F.conv2d(x, m.weight, m.bias, m.stride, m.padding)

                def fb(m=m, x=x, w=w_cl):
                    return F.conv2d(x, w, m.bias, m.stride, m.padding).contiguous()

                eq = bool(torch.equal(fa(), fb()))
                same += eq
                a_ms, b_ms = timed(fa, args.iters), timed(fb, args.iters)
                ta += a_ms
                tb += b_ms
                worst.append((a_ms - b_ms, tuple(x.shape), tuple(m.weight.shape), eq))
        n = len(inputs)
        print(f"{label}: {n} convolution calls; B identical to A: {same}/{n}; sum of per-call times A {ta:.2f} ms, "
              f"B {tb:.2f} ms", flush=True)
        for d, xs, ws, eq in sorted(worst, reverse=True)[:8]:
            print(f"    saves {d:7.3f} ms  x{list(xs)} w{list(ws)} {'same' if eq else 'DIFFERS'}")
        for d, xs, ws, eq in sorted(worst)[:4]:
            print(f"    costs {-d:7.3f} ms  x{list(xs)} w{list(ws)} {'same' if eq else 'DIFFERS'}")
        # whole model: every conv weight channels-last, every conv output made channels-first
        ms_a = timed(lambda: call(), args.iters)
        originals = {}
        for m in convs:
            originals[m] = m.forward
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
            m.forward = (lambda x, _m=m: F.conv2d(x, _m.weight, _m.bias, _m.stride, _m.padding).contiguous())
        with torch.no_grad():
            out = call()
        ms_b = timed(lambda: call(), args.iters)
        print(f"  whole call: A {ms_a:.2f} ms, B {ms_b:.2f} ms ({ms_b / ms_a:.3f}x); output identical: "
              f"{bool(torch.equal(ref, out))}", flush=True)
        for m in convs:
            m.forward = originals[m]
            m.weight.data = m.weight.data.contiguous()

    def built(cls, cfg):
        """a random float16 model built on the GPU"""
        torch.manual_seed(0)
        torch.set_default_dtype(torch.float16)
        with torch.device("cuda"):
            m = cls(**cfg).eval()
        torch.set_default_dtype(torch.float32)
        return m

    rows = 2 * args.k
    g = torch.Generator("cpu").manual_seed(0)
    only = args.only.split(",")
    # the UNets at the sweep's batch: (option, label, config, text tokens, text width)
    for key, label, cfg, tokens, dim in (("if", "IF UNet", bench.IF_UNET, 77, 4096), ("sd", "SD UNet", bench.SD_UNET, 77, 768)):
        if key not in only:
            continue
        u = built(UNet2DConditionModel, cfg)
        x = torch.randn(rows, u.config.in_channels, 64, 64, generator=g).half().cuda()
        emb = torch.randn(rows, tokens, dim, generator=g).half().cuda()
        t = torch.full((rows,), 801, device="cuda")
        measure(label, u, lambda: u(x, t, encoder_hidden_states=emb).sample)
        del u
        torch.cuda.empty_cache()
    if "vae" in only:
        v = built(AutoencoderKL, bench.SD_VAE)
        z = torch.randn(args.k, 4, 64, 64, generator=g).half().cuda()
        measure("SD VAE decode", v, lambda: v.decode(z).sample)

if __name__ == "__main__":
    main()

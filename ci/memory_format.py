#!/usr/bin/env python3
"""Channels-last (NHWC) against PyTorch's default NCHW layout, in diffusers' own models on the GPU host (issue #11).

For the bench's SD 1.5-sized UNet and VAE decoder and the IF-I-XL-sized UNet (random weights, float16, built on the
GPU): the time of one call at the sweep's batch (12 layers: 24 UNet rows, 12 VAE rows) in each layout, the largest
difference between the layouts, and batch invariance in each layout: every leaf module is recorded in a call of one
layer's rows and called again on those inputs repeated k times; a module whose first rows differ is batch-variant.

  python3 ci/memory_format.py [--k 12] [--only sd,vae,if] [--iters 10] [--profile]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import batch_invariance  # noqa: E402
import bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--only", default="sd,vae,if")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cl = torch.channels_last
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)

    def timed(fn, iters):
        with torch.no_grad():
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / iters

    def invariance(model, call_small, rows):
        """per leaf module kind and shape: calls, batch-variant calls, largest difference"""
        return batch_invariance.variant_modules(model, call_small, rows, args.k, shaped=("Conv2d", "Linear", "GroupNorm"))

    def report(label, variant):
        convs = [k for k in variant if k.startswith("Conv2d")]
        bad = [k for k in convs if variant[k][1]]
        others = [k for k in variant if not k.startswith("Conv2d") and variant[k][1]]
        print(f"  {label}: batch-variant conv shapes {len(bad)} of {len(convs)}; other variant modules: "
              + (", ".join(f"{k} ({variant[k][1]}/{variant[k][0]}, {variant[k][2]:.3g})" for k in others) or "none"), flush=True)
        for k in bad:
            print(f"    {k}: {variant[k][1]}/{variant[k][0]} calls, max {variant[k][2]:.3g}")

    def profile(label, fn):
        if not args.profile:
            return
        from torch.profiler import ProfilerActivity, profile as prof
        with torch.no_grad(), prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
        print(f"  profile {label} (3 calls):")
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))

    def each_layout(label, model, inp, call_on, iters):
        """NCHW, then model and input channels-last: per layout the call on the input timed (and profiled), its
        result printed; yields (layout, input, float32 result)"""
        for fmt in ("nchw", "nhwc"):
            if fmt == "nhwc":
                model.to(memory_format=cl)
                inp = inp.contiguous(memory_format=cl)
            def call(x=inp):
                return call_on(x)
            sec = timed(call, iters)
            with torch.no_grad():
                out = call().float()
            print(f"  {fmt}: {sec * 1000:.1f} ms a call", flush=True)
            profile(f"{label} {fmt}", call)
            yield fmt, inp, out

    def unet_case(kind, cfg, tokens, dim):
        torch.manual_seed(0)
        torch.set_default_dtype(torch.float16)
        with torch.device("cuda"):
            unet = UNet2DConditionModel(**cfg).eval()
        torch.set_default_dtype(torch.float32)
        g = torch.Generator("cpu").manual_seed(0)
        c = unet.config
        rows = 2 * args.k
        x = torch.randn(rows, c.in_channels, c.sample_size, c.sample_size, generator=g).half().cuda()
        emb = torch.randn(rows, tokens, dim, generator=g).half().cuda()
        t = torch.full((rows,), 801, device="cuda")
        print(f"{kind} UNet ({sum(p.numel() for p in unet.parameters()) / 1e9:.2f}B), {rows} rows:", flush=True)
        res = {}
        for fmt, xin, out in each_layout(kind, unet, x, lambda xi: unet(xi, t, encoder_hidden_states=emb).sample, args.iters):
            res[fmt] = out
            xs = xin[:2]
            report(fmt, invariance(unet, lambda: unet(xs, t[:2], encoder_hidden_states=emb[:2]), 2))
            with torch.no_grad():
                whole = unet(xs, t[:2], encoder_hidden_states=emb[:2]).sample.float()
            print(f"  {fmt}: whole call, rows 0-1 of {rows} vs own call: max diff {(res[fmt][:2] - whole).abs().max().item():.3g}")
        print(f"  nchw vs nhwc: max diff {(res['nchw'] - res['nhwc']).abs().max().item():.3g}, "
              f"scale {res['nchw'].abs().max().item():.3g}", flush=True)
        del unet
        torch.cuda.empty_cache()

    only = args.only.split(",")
    if "sd" in only:
        unet_case("sd", bench.SD_UNET, 77, 768)
    if "vae" in only:
        torch.manual_seed(0)
        torch.set_default_dtype(torch.float16)
        with torch.device("cuda"):
            vae = AutoencoderKL(**bench.SD_VAE).eval()
        torch.set_default_dtype(torch.float32)
        z = torch.randn(args.k, 4, 64, 64, generator=torch.Generator("cpu").manual_seed(0)).half().cuda()
        print(f"sd VAE decode, {args.k} rows:", flush=True)
        res = {}
        for fmt, zin, out in each_layout("vae", vae, z, lambda zi: vae.decode(zi).sample, max(3, args.iters // 2)):
            res[fmt] = out
            zs = zin[:1]
            report(fmt, invariance(vae.decoder, lambda: vae.decode(zs), 1))
        print(f"  nchw vs nhwc: max diff {(res['nchw'] - res['nhwc']).abs().max().item():.3g}", flush=True)
        del vae
        torch.cuda.empty_cache()
    if "if" in only:
        unet_case("if", bench.IF_UNET, 77, 4096)


if __name__ == "__main__":
    main()

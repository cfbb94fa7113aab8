#!/usr/bin/env python3
"""Which UNet layers give a row different numbers when more rows share the call (issue #11: `--batch auto` images
identical to `--batch 1`)? On the GPU host, with diffusers' own UNet of the bench's SD 1.5-sized model (float16):

One guided call for one layer (diffusers' batch of two: [uncond, cond]) is run with forward hooks recording every
leaf module's inputs. Each leaf module is then called again on those inputs repeated k times along the batch
dimension (k layers batched, 2k rows) and its first two output rows are compared with the batch-of-two output.
A module whose rows differ is batch-variant: its kernels (algorithm, tiling, split-K) depend on the batch size.
Also checks the whole UNet call and each setting given by --cudnn (benchmark, deterministic) and --sdpa.

  python3 ci/batch_invariance.py [--k 12] [--model /tmp/lens-bench/sd15-random]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402


def variant_modules(model, call_small, rows: int, k: int, shaped=("Conv2d", "Linear")) -> dict:
    """Every leaf module (and Attention as a whole: its SDPA is a function call, not a module) recorded in
    call_small(), a call of `rows` rows, then called again on its inputs repeated k times along the batch (kept
    channels-last where they were): per module kind (and in/out shape for the kinds in `shaped`), [calls, calls whose
    first rows differ, largest difference]."""
    import torch
    records = []

    def hook(mod, a, kw, out):
        if not list(mod.children()) or type(mod).__name__ == "Attention":
            records.append((mod, a, kw, out))

    hs = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()]
    try:
        with torch.no_grad():
            call_small()
    finally:
        for h in hs:
            h.remove()

    def rep(x):
        if isinstance(x, torch.Tensor) and x.ndim > 0 and x.shape[0] == rows:
            y = torch.cat([x] * k, 0)
            cl = torch.channels_last
            return y.contiguous(memory_format=cl) if x.ndim == 4 and x.is_contiguous(memory_format=cl) and not x.is_contiguous() else y
        return x

    variant = defaultdict(lambda: [0, 0, 0.0])
    with torch.no_grad():
        for mod, a, kw, out in records:
            if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != rows:
                continue
            big = mod(*[rep(x) for x in a], **{key: rep(v) for key, v in kw.items()})
            name = type(mod).__name__
            if name in shaped:
                name += f" {tuple(a[0].shape[1:])}->{tuple(out.shape[1:])}"
            v = variant[name]
            v[0] += 1
            d = (big[:rows].float() - out.float()).abs().max().item()
            if d > 0:
                v[1] += 1
                v[2] = max(v[2], d)
    return variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--model")
    ap.add_argument("--deterministic", action="store_true", help="torch.backends.cudnn.deterministic = True")
    args = ap.parse_args()
    import torch
    from diffusers import UNet2DConditionModel

    torch.backends.cudnn.deterministic = args.deterministic

    class A:
        if_unet_config = None
    folder = Path(args.model) if args.model else bench.ensure_model("sd", A)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float16).to("cuda").eval()
    g = torch.Generator("cpu").manual_seed(0)
    c = unet.config
    sample = torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=g).half().cuda()
    emb = torch.randn(2, 77, c.cross_attention_dim, generator=g).half().cuda()
    t = torch.tensor(801, device="cuda")

    with torch.no_grad():
        out2 = unet(sample, t, encoder_hidden_states=emb).sample
        variant = variant_modules(unet, lambda: unet(sample, t, encoder_hidden_states=emb), 2, args.k)
        big_sample = torch.cat([sample] * args.k, 0)
        out_big = unet(big_sample, t.expand(2 * args.k), encoder_hidden_states=torch.cat([emb] * args.k, 0)).sample
    whole = (out_big[:2].float() - out2.float()).abs().max().item()
    print(f"cudnn.deterministic={args.deterministic}; k={args.k} (rows {2 * args.k}) vs 2 rows")
    print(f"whole UNet call: max |diff| of the first two rows = {whole:.3g}")
    print(f"{'module (in->out shape)':70s} {'calls':>6s} {'variant':>8s} {'max diff':>10s}")
    for name, (n, bad, d) in sorted(variant.items(), key=lambda kv: (-kv[1][1], kv[0])):
        print(f"{name[:70]:70s} {n:6d} {bad:8d} {d:10.3g}")


if __name__ == "__main__":
    main()

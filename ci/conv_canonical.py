#!/usr/bin/env python3
"""Can batch-variant convolutions be made batch-invariant by running every call at one canonical batch (issue #11)?

For the bench's SD 1.5-sized UNet (24 rows = 12 layers x [uncond, cond]) and VAE decoder (12 rows), random weights,
float16 on the GPU host: each Conv2d input of one layer's call (2 UNet rows, 1 VAE row) is run alone (what --batch 1
computes) and inside a call of 12 layers' rows (the layer's rows at slot p, other slots other data), for several p and
other data. Per shape: whether the 12-layer call gives the layer's rows the single call's numbers ("native"), and
whether it gives them the same numbers whatever the slot and the other rows ("canonical": then zero-padding every call
to 12 layers' rows gives every batch size the same images); times of both calls.

  python3 ci/conv_canonical.py [--layers 12]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**bench.SD_UNET).half().cuda().eval()
    vae = AutoencoderKL(**bench.SD_VAE).half().cuda().eval()
    rec = {}

    def hook(m, a, out):
        x = a[0]
        key = (tuple(x.shape), tuple(m.weight.shape), m.stride, m.padding, x.is_contiguous())
        if key not in rec:
            rec[key] = [m, x.detach().clone(), 0]
        rec[key][2] += 1
    hooks = [mod.register_forward_hook(hook) for mod in list(unet.modules()) + list(vae.modules())
             if isinstance(mod, torch.nn.Conv2d)]
    g = torch.Generator("cpu").manual_seed(0)
    with torch.no_grad():
        s = torch.randn(2, 4, 64, 64, generator=g).half().cuda()
        e = torch.randn(2, 77, 768, generator=g).half().cuda()
        unet(s, torch.tensor(801, device="cuda"), encoder_hidden_states=e)
        vae.decode(torch.randn(1, 4, 64, 64, generator=g).half().cuda() / 0.18215)
    for h in hooks:
        h.remove()
    L = args.layers

    def t(f, n=10):
        f(); torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n): f()
        b.record(); torch.cuda.synchronize()
        return a.elapsed_time(b) / n
    tot = dict(native=0.0, big=0.0, unit=0.0, split=0.0, pad_unit=0.0)
    nvar = ncanon = nvar_canon = 0
    print(f"{'input':>22s} {'weight':>20s} calls native canonical  t_unit  t_big(ms)")
    with torch.no_grad():
        for key, (m, x, calls) in rec.items():
            u = x.shape[0]
            ref = m(x)
            sc = x.float().std().item() or 1.0
            native = canonical = True
            outs = []
            for trial, p in enumerate([0, L // 2, L - 1, 0]):
                gg = torch.Generator("cuda").manual_seed(100 + trial)
                others = (torch.randn((L * u,) + tuple(x.shape[1:]), generator=gg, device="cuda") * sc).half()
                if trial == 3:
                    others.zero_()
                others[p * u:(p + 1) * u] = x
                o = m(others)[p * u:(p + 1) * u]
                outs.append(o)
                native &= bool(torch.equal(o, ref))
                canonical &= bool(torch.equal(o, outs[0]))
            tu = t(lambda: m(x)); xb = torch.cat([x] * L); tb = t(lambda: m(xb))
            nvar += not native; ncanon += canonical; nvar_canon += (not native) and canonical
            tot["big"] += tb * calls; tot["unit"] += tu * calls
            tot["split"] += (tu * L if not native else tb) * calls
            tot["pad_unit"] += (tb if not native else tu) * calls
            flag = "" if native else "  <- variant"
            print(f"{str(tuple(x.shape)):>22s} {str(tuple(m.weight.shape)):>20s} {calls:5d} {native!s:>6s} {canonical!s:>9s} {tu:7.3f} {tb:7.3f}{flag}")
    print(f"shapes {len(rec)}: variant at {L} layers {nvar}, canonical {ncanon}, variant and canonical {nvar_canon}")
    print("conv time per UNet+VAE pass (ms): "
          f"all at {L} layers {tot['big']:.2f}; variant ones split per layer {tot['split']:.2f}; "
          f"one layer {tot['unit']:.2f}; one layer with variant ones padded to {L} layers {tot['pad_unit']:.2f}")


if __name__ == "__main__":
    main()

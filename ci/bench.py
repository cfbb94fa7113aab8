#!/usr/bin/env python3
"""Speed of the C# lens sweep against diffusers on the same GPU, as ratios.

Builds a Stable Diffusion 1.5-sized pipeline with random weights (the real SD 1.5 configs: CLIP ViT-L/14 text encoder,
860M-parameter UNet, the SD VAE; no download needed), saves it in diffusers layout, then times the same Diffusion Lens
sweep (prompt encoded once, every layer's lens embedding through the full pipeline, 512x512) twice:
  diffusers  - StableDiffusionPipeline(prompt_embeds=lens_L, negative_prompt_embeds=...) per layer
  C#         - `lens sweep` (batch 1: diffusers' exact batch of two; batch 4: four layers per UNet batch)
Timings exclude model loading; each side runs once to warm up first. Prints a table; writes bench.json.

Run by ci/gpu-test.sh --bench (needs torch + diffusers; the C# app from ci/gpu-pack.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "A few people are in the ocean splashing around"

UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
           sample_size=512)
TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
            eos_token_id=49407, pad_token_id=1)


def build(folder: Path) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tok_dir = ROOT / "fixtures" / "models" / "sd-tiny-12" / "tokenizer"
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)), tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
        unet=UNet2DConditionModel(**UNET),
        scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                                set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(tok_dir / f, folder / "tokenizer" / f)


def time_diffusers(folder: Path, steps: int, layers: list[int], dtype) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    te = pipe.text_encoder
    tm = getattr(te, "text_model", te)

    def sweep():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.cuda()
        neg = pipe.tokenizer("", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.cuda()
        with torch.no_grad():
            hs = te(ids, output_hidden_states=True).hidden_states
            uncond = te(neg)[0]
        for L in layers:
            g = torch.Generator("cpu").manual_seed(17)
            pipe(prompt_embeds=tm.final_layer_norm(hs[L + 1]), negative_prompt_embeds=uncond, num_inference_steps=steps,
                 generator=g, height=512, width=512, output_type="np")
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    sweep()  # warm-up
    return {"total_s": sweep()}


def time_csharp(app: Path, folder: Path, steps: int, layers: list[int], dtype: str, batch: int, out: Path) -> dict:
    times = []
    for i in range(2):  # warm-up, then measured
        d = out / f"cs-b{batch}-{i}"
        shutil.rmtree(d, ignore_errors=True)
        cmd = ["dotnet", str(app / "lens.dll"), "sweep", "--model", str(folder), "--prompt", PROMPT, "--steps", str(steps),
               "--layers", ",".join(map(str, layers)), "--device", "cuda", "--dtype", dtype, "--batch", str(batch),
               "--height", "512", "--width", "512", "--quiet", "--out", str(d)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"lens sweep failed: {r.stderr[-2000:]}")
        m = json.loads((d / "manifest.json").read_text())
        t = m["timings_s"]
        times.append(t["total"] - t["load"])
    return {"total_s": times[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", required=True, help="folder with lens.dll (ci/gpu-pack.sh)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--layers", default="0,2,4,6,8,10,11")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layers = [int(x) for x in args.layers.split(",")]
    folder = Path("/tmp/lens-bench/sd15-random")
    if not (folder / "model_index.json").exists():
        t0 = time.perf_counter()
        build(folder)
        print(f"built a random SD 1.5-sized pipeline in {time.perf_counter() - t0:.0f}s")
    gpu = torch.cuda.get_device_name()
    rows = []
    ref = time_diffusers(folder, args.steps, layers, torch.float16)
    rows.append(("diffusers (fp16, per layer batch 2)", ref["total_s"]))
    for batch in (1, 4):
        cs = time_csharp(Path(args.app), folder, args.steps, layers, "float16", batch, out)
        rows.append((f"C# lens sweep (fp16, --batch {batch})", cs["total_s"]))
    print(f"\nSD 1.5-sized sweep, {len(layers)} layers x {args.steps} steps (+1 PNDM call) at 512x512 on {gpu}")
    print(f"{'':40s} {'seconds':>9s} {'ratio vs diffusers':>20s}")
    for name, s in rows:
        print(f"{name:40s} {s:9.2f} {s / rows[0][1]:20.2f}")
    (out / "bench.json").write_text(json.dumps(dict(gpu=gpu, steps=args.steps, layers=layers,
                                                   rows=[dict(name=n, seconds=s, ratio=s / rows[0][1]) for n, s in rows]), indent=2))


if __name__ == "__main__":
    main()

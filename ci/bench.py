#!/usr/bin/env python3
"""Speed of the C# lens sweep against diffusers on the same GPU (issue #11's table), as ratios.

Models (random weights, built once per GPU host under /tmp/lens-bench, directly on the GPU in float16, no download):
  sd  - Stable Diffusion 1.5 architecture (the real SD 1.5 UNet/VAE/CLIP ViT-L/14 configs, PNDM), float16
  if  - DeepFloyd IF stage I sized: T5 v1.1 XXL encoder (google/t5-v1_1-xxl config) + an IF-I-XL-sized UNet (see
        IF_UNET; pass --if-unet-config unet/config.json of the real IF-I-XL-v1.0 to use its exact config), DDPM as IF
        ships it, saved with variant="fp16"
  sdxl - Stable Diffusion XL base 1.0 architecture (CLIP ViT-L + OpenCLIP bigG with projection, the 2.6B UNet,
        EulerDiscreteScheduler), float16; the tutorial's SDXL lens (make_reference's SdxlLens hooks on diffusers' side)
  flux - FLUX.1-schnell architecture (CLIP ViT-L, T5 v1.1 XXL, the 12B FluxTransformer2DModel, 16-channel VAE,
        FlowMatchEulerDiscreteScheduler), bfloat16 (~33 GB on disk: the IF model folder is removed first to make room);
        the tutorial's FLUX lens (FluxLens hooks)
Workload (the issue's): prompt "A few people are in the ocean splashing around", seed 17.
  sd: 12 layers x 50 PNDM steps (51 UNet calls), 512x512, guidance 7.5; and 2 steps (3 UNet calls) for fixed costs
  if: the tutorial's 12 blocks (0,2,...,22 of 24), 64x64, 100 DDPM steps, guidance 7.0, no caption cleaning
  sdxl: 12 layers (0,2,...,22 of text_encoder_2's 0..30) x 20 Euler steps, 1024x1024, guidance 5.0
  flux: the tutorial's 12 T5 blocks (0,2,...,22) x 4 steps (schnell's default), 512x512, guidance 0

Diffusers side (one fresh process per model; everything it times writes PNGs, as the C# sweep does, and a grid):
  load      from_pretrained(...).to("cuda")
  batched   all layers in ONE pipeline call: k lens prompt_embeds rows + k negative rows, the same seed's latents for
            every row (SD; IF draws its noise as IFPipeline does) -- timed cold (first call after loading: cuDNN/cuBLAS
            setup included, as in a fresh C# process) and warm (second call)
  2 steps   the batched call at 2 steps (warm): fixed costs
  serial    the tutorial's loop, one pipeline call per layer (warm); IF: over --if-serial-layers layers, scaled to 12
  one image IF: one layer, one call (warm)
C# side: `lens sweep` in a fresh process per run; "cold" = timings_s.total - load (it includes the sweep's warm-up
phase and the checks before loading), "warm" = that minus timings_s.warmup and timings_s.prepare (since 2026-12-01;
rows before that date subtract warmup only). --batch 1 (diffusers' exact batch of two) and --batch auto.
Peak GPU memory: diffusers torch.cuda.max_memory_reserved; both sides also the driver's view (total - free, incl. the
CUDA context) at the end of the batched run / the largest the sweep saw (manifest gpu_memory_peak_gib).

Run by ci/gpu-test.sh --bench [--profile] (torch, transformers and diffusers sources on PYTHONPATH; the C# app from
ci/gpu-pack.sh). Flags: --only sd|if|sdxl|flux (all: sd and if), --quick (4 layers, fewer steps), --profile (per-step host-queue vs total time
of the C# sweep, LENS_PROFILE=1). Each section that fails prints its error and the bench goes on.
Prints a phase breakdown for both sides and the ratios C#/diffusers; appends rows to ci/BENCHMARKS.md; writes
bench.json to --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "A few people are in the ocean splashing around"
SEED = 17
WORK = Path(os.environ.get("LENS_BENCH_DIR", "/tmp/lens-bench"))
RUNS = WORK / "runs"  # every run's images and manifest (--out gets the summaries only)

# --- Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5 unet/vae/text_encoder/scheduler configs) ---
SD_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
               down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
               cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu", center_input_sample=False,
               downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
              sample_size=512, act_fn="silu")
SD_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
               eos_token_id=49407, pad_token_id=1, layer_norm_eps=1e-5)
SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                    set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)

# --- DeepFloyd IF stage I ---
# google/t5-v1_1-xxl (encoder only): d_model 4096, d_kv 64, d_ff 10240, 24 layers, 64 heads, gated-gelu
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
              dropout_rate=0.0, layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
# IF-I-XL-sized UNet in the layout diffusers' scripts/convert_if.py gives stage I (64x64 pixels, learned variance,
# attention at 32/16/8, resblock up/down, scale-shift norm, text pooling): channel widths chosen so the parameter
# count is IF-I-XL's 4.3B (printed when built). --if-unet-config replaces it with a real config.json.
IF_UNET = dict(sample_size=64, in_channels=3, out_channels=6, layers_per_block=3, block_out_channels=(512, 1024, 1536, 2048),
               down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                                 "SimpleCrossAttnDownBlock2D"),
               mid_block_type="UNetMidBlock2DSimpleCrossAttn",
               up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                               "ResnetUpsampleBlock2D"),
               cross_attention_dim=4096, encoder_hid_dim=4096, attention_head_dim=64, addition_embed_type="text",
               addition_embed_type_num_heads=64, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
               act_fn="gelu", upcast_attention=False, use_linear_projection=False)
IF_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
                    thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5, clip_sample=True,
                    clip_sample_range=1.0, prediction_type="epsilon", variance_type="learned_range")

# --- Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0 configs) ---
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True,
                 freq_shift=0, upcast_attention=False)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_TEXT_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=49406,
                   eos_token_id=49407, pad_token_id=1, layer_norm_eps=1e-5)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", prediction_type="epsilon", interpolation_type="linear",
                      use_karras_sigmas=False)

# --- FLUX.1-schnell (black-forest-labs/FLUX.1-schnell configs) ---
FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False,
                        axes_dims_rope=(16, 56, 56))
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
                sample_size=1024, act_fn="silu", scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False, force_upcast=True)
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)

# per model: the sweep's settings on both sides
SETTINGS = {
    "sd": dict(height=512, width=512, guidance=7.5, dtype="float16"),
    "if": dict(height=64, width=64, guidance=7.0, dtype="float16"),
    "sdxl": dict(height=1024, width=1024, guidance=5.0, dtype="float16"),
    "flux": dict(height=512, width=512, guidance=0.0, dtype="bfloat16"),
}
FOLDERS = {"sd": "sd15-random", "if": "if-xl-random", "sdxl": "sdxl-random", "flux": "flux-schnell-random"}


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------ model building
def _fast_init():
    """Construct modules directly on the GPU in float16 (random init runs there: seconds, not minutes)."""
    import torch
    torch.set_default_dtype(torch.float16)
    return torch.device("cuda")


def build_sd(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tok_dir = ROOT / "fixtures" / "models" / "sd-tiny-12" / "tokenizer"
    with _fast_init():
        unet, vae = UNet2DConditionModel(**SD_UNET), AutoencoderKL(**SD_VAE)
        te = CLIPTextModel(CLIPTextConfig(**SD_TEXT))
    torch.set_default_dtype(torch.float32)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet,
                                   scheduler=PNDMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(tok_dir / f, folder / "tokenizer" / f)
    log(f"  unet {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M parameters")


def build_if(folder: Path, unet_config: dict) -> None:
    import torch
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    tok_dir = ROOT / "fixtures" / "models" / "if-tiny-a" / "tokenizer"
    with _fast_init():
        te = T5EncoderModel(T5Config(**T5_XXL))
        unet = UNet2DConditionModel(**unet_config)
    torch.set_default_dtype(torch.float32)
    log(f"  T5 {sum(p.numel() for p in te.parameters()) / 1e9:.2f}B, UNet {sum(p.numel() for p in unet.parameters()) / 1e9:.2f}B parameters")
    pipe = IFPipeline(tokenizer=T5Tokenizer.from_pretrained(tok_dir), text_encoder=te, unet=unet,
                      scheduler=DDPMScheduler(**IF_SCHEDULER), safety_checker=None, feature_extractor=None,
                      watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True, variant="fp16")
    for f in tok_dir.iterdir():  # the tokenizer folder as IF ships it (spiece.model + config, no tokenizer.json)
        shutil.copy(f, folder / "tokenizer" / f.name)
    (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)


def _fixture_tokenizers(folder: Path, tok_dir: Path) -> None:
    """The fixture's tokenizer folders replace what save_pretrained wrote: transformers 5 saves them without
    model_max_length, and the pipelines then pad to a length tokenizers cannot take (OverflowError)."""
    for sub in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        shutil.copytree(tok_dir / sub, folder / sub)


def build_sdxl(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tok_dir = ROOT / "fixtures" / "models" / "sdxl-tiny"
    with _fast_init():
        unet, vae = UNet2DConditionModel(**SDXL_UNET), AutoencoderKL(**SDXL_VAE)
        te = CLIPTextModel(CLIPTextConfig(**SD_TEXT))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2))
    torch.set_default_dtype(torch.float32)
    log(f"  unet {sum(p.numel() for p in unet.parameters()) / 1e9:.2f}B, text_encoder_2 "
        f"{sum(p.numel() for p in te2.parameters()) / 1e6:.0f}M parameters")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2,
                                     tokenizer=CLIPTokenizer.from_pretrained(tok_dir / "tokenizer"),
                                     tokenizer_2=CLIPTokenizer.from_pretrained(tok_dir / "tokenizer_2"), unet=unet,
                                     scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER), force_zeros_for_empty_prompt=True,
                                     add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    _fixture_tokenizers(folder, tok_dir)


def build_flux(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(0)
    tok_dir = ROOT / "fixtures" / "models" / "flux-tiny"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        transformer, vae = FluxTransformer2DModel(**FLUX_TRANSFORMER), AutoencoderKL(**FLUX_VAE)
        te = CLIPTextModel(CLIPTextConfig(**SD_TEXT))
        t5 = T5EncoderModel(T5Config(**T5_XXL))
    torch.set_default_dtype(torch.float32)
    log(f"  transformer {sum(p.numel() for p in transformer.parameters()) / 1e9:.2f}B, T5 "
        f"{sum(p.numel() for p in t5.parameters()) / 1e9:.2f}B parameters")
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae, text_encoder=te,
                        tokenizer=CLIPTokenizer.from_pretrained(tok_dir / "tokenizer"), text_encoder_2=t5,
                        tokenizer_2=T5TokenizerFast.from_pretrained(tok_dir / "tokenizer_2"), transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    _fixture_tokenizers(folder, tok_dir)


def ensure_model(kind: str, args) -> Path:
    folder = WORK / FOLDERS[kind]
    if (folder / "model_index.json").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    log(f"building a random {kind} pipeline in {folder} ...")
    if kind == "sd":
        build_sd(folder)
    elif kind == "sdxl":
        build_sdxl(folder)
    elif kind == "flux":
        shutil.rmtree(WORK / FOLDERS["if"], ignore_errors=True)  # the device's disk holds FLUX's ~33 GB or IF's 18 GB
        build_flux(folder)
    else:
        cfg = dict(IF_UNET)
        if args.if_unet_config:
            cfg = {k: v for k, v in json.loads(Path(args.if_unet_config).read_text()).items() if not k.startswith("_")}
        build_if(folder, cfg)
    import torch
    torch.cuda.empty_cache()
    log(f"  built in {time.perf_counter() - t0:.0f}s")
    return folder


# ------------------------------------------------------------------------------------------------ diffusers side
def diffusers_worker(kind: str, folder: Path, layers: list[int], steps: int, serial_layers: int, out: Path,
                     plan: str = "full") -> dict:
    """Runs in its own process; returns its measurements as JSON on stdout's last line. plan "batched": one batched
    call only (ci/kernel_trace.py traces it)."""
    import torch
    from diffusers.utils import make_image_grid
    from diffusers.utils.torch_utils import randn_tensor

    res: dict = {}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    if kind == "sd":
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16, safety_checker=None,
                                                       requires_safety_checker=False).to("cuda")
    elif kind == "sdxl":
        from diffusers import StableDiffusionXLPipeline
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float16, add_watermarker=False).to("cuda")
    elif kind == "flux":
        from diffusers import FluxPipeline
        pipe = FluxPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).to("cuda")
    else:
        from diffusers import IFPipeline
        pipe = IFPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float16, safety_checker=None,
                                          feature_extractor=None, watermarker=None, requires_safety_checker=False).to("cuda")
    torch.cuda.synchronize()
    res["load_s"] = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    te = pipe.text_encoder
    settings = SETTINGS[kind]

    def encode():
        if kind in ("sdxl", "flux"):
            # the tutorial's lens as make_reference's forward hooks, one encode_prompt per layer: (prompt, pooled) rows
            sys.path.insert(0, str(ROOT / "python" / "diffusion-lens-reference" / "src"))
            from diffusion_lens_reference.make_reference import FluxLens, SdxlLens
            rows = []
            with torch.no_grad():
                for L in layers:
                    if kind == "sdxl":
                        with SdxlLens(pipe, L, True):
                            pe, _, pooled, _ = pipe.encode_prompt(PROMPT, device=torch.device("cuda"),
                                                                  do_classifier_free_guidance=False)
                    else:
                        with FluxLens(pipe, L):
                            pe, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, device=torch.device("cuda"),
                                                               max_sequence_length=512)
                    rows.append((pe, pooled))
            return rows, None
        if kind == "sd":
            tm = getattr(te, "text_model", te)  # transformers 5 flattens CLIPTextModel
            ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.cuda()
            neg = pipe.tokenizer("", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.cuda()
            with torch.no_grad():
                hs = te(ids, output_hidden_states=True).hidden_states
                uncond = te(neg)[0]
            return [tm.final_layer_norm(hs[L + 1]) for L in layers], uncond
        # IF: IFPipeline.encode_prompt's tokenization (max_length 77, attention mask), no caption cleaning
        def tok(text):
            t = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, add_special_tokens=True,
                               return_tensors="pt")
            return t.input_ids.cuda(), t.attention_mask.cuda()
        ids, mask = tok(PROMPT)
        nids, nmask = tok("")
        with torch.no_grad():
            hs = te(ids, attention_mask=mask, output_hidden_states=True).hidden_states
            uncond = te(nids, attention_mask=nmask)[0]
        return [te.encoder.final_layer_norm(hs[L + 1]) for L in layers], uncond

    def call(embeds, uncond, n_steps, d: Path):
        k = len(embeds)
        if kind in ("sdxl", "flux"):
            h, w = settings["height"], settings["width"]
            kw = dict(prompt_embeds=torch.cat([e for e, _ in embeds], 0), pooled_prompt_embeds=torch.cat([p for _, p in embeds], 0),
                      num_inference_steps=n_steps, guidance_scale=settings["guidance"], height=h, width=w, output_type="pil")
            g = torch.Generator("cpu").manual_seed(SEED)
            if kind == "sdxl":
                # every row from the seed's single-image noise; the negative conditioning: zeros (force_zeros_for_empty_prompt)
                shape = (1, pipe.unet.config.in_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
                noise = randn_tensor(shape, generator=g, device=torch.device("cuda"), dtype=torch.float16)
                kw.update(latents=noise.expand(k, -1, -1, -1).contiguous())
            else:
                latents, _ = pipe.prepare_latents(1, pipe.transformer.config.in_channels // 4, h, w, torch.bfloat16,
                                                  torch.device("cuda"), g)
                kw.update(latents=latents.expand(k, -1, -1).contiguous())
            return pipe(**kw).images
        kw = dict(prompt_embeds=torch.cat(embeds, 0), negative_prompt_embeds=uncond.expand(k, -1, -1).contiguous(),
                  num_inference_steps=n_steps, generator=torch.Generator("cpu").manual_seed(SEED), output_type="pil")
        if kind == "sd":
            # every row starts from the seed's single-image noise, as a per-layer call would
            shape = (1, pipe.unet.config.in_channels, 64, 64)
            noise = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(SEED), device=torch.device("cuda"),
                                 dtype=torch.float16)
            kw.update(latents=noise.expand(k, -1, -1, -1).contiguous(), height=512, width=512, guidance_scale=7.5)
        else:
            kw.update(height=64, width=64, guidance_scale=7.0, clean_caption=False)
        images = pipe(**kw).images
        return images

    def run(name: str, n_steps: int, rows: list[int] | None, serial: bool) -> float:
        d = RUNS / f"diffusers-{kind}-{name}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        phases = {}
        embeds, uncond = encode()
        torch.cuda.synchronize()
        phases["encode"] = time.perf_counter() - t
        sel = list(range(len(embeds))) if rows is None else rows
        images = []
        if serial:
            for i in sel:
                images += call([embeds[i]], uncond, n_steps, d)
        else:
            images = call([embeds[i] for i in sel], uncond, n_steps, d)
        torch.cuda.synchronize()
        tw = time.perf_counter()
        phases["pipeline"] = tw - t - phases["encode"]
        for i, img in zip(sel, images):
            img.save(d / f"layer-{layers[i]:02d}.png")
        make_image_grid(images, rows=1, cols=len(images)).save(d / "grid.png")
        phases["write_images"] = time.perf_counter() - tw
        total = time.perf_counter() - t
        res[name] = dict(total_s=total, **{k + "_s": v for k, v in phases.items()}, layers=len(sel))
        return total

    torch.cuda.reset_peak_memory_stats()
    if plan == "batched":
        run("batched_cold", steps, None, False)
        return res
    run("batched_cold", steps, None, False)
    run("batched_warm", steps, None, False)
    res["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    free, total = torch.cuda.mem_get_info()
    res["driver_used_gib"] = (total - free) / 2**30
    run("batched_2steps", 2, None, False)
    if kind == "if":
        run("one_image", steps, [0], True)
    n = min(serial_layers, len(layers))
    run("serial", steps, list(range(n)), True)
    res["serial"]["scaled_total_s"] = res["serial"]["total_s"] * len(layers) / n
    return res


def time_diffusers(kind: str, folder: Path, layers: list[int], steps: int, serial_layers: int, out: Path,
                   plan: str = "full", env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--folder", str(folder), "--worker-layers", ",".join(map(str, layers)),
           "--worker-steps", str(steps), "--worker-serial", str(serial_layers), "--worker-plan", plan, "--out", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"diffusers worker failed: {r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------------ C# side
def time_csharp(app: Path, kind: str, folder: Path, layers: str, steps: int, batch: str, out: Path, name: str,
                profile: bool = False, env: dict | None = None, extra: list[str] | None = None) -> dict:
    d = RUNS / f"cs-{kind}-{name}"
    shutil.rmtree(d, ignore_errors=True)
    d.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["dotnet", str(app / "lens.dll"), "sweep", "--model", str(folder), "--prompt", PROMPT, "--seed", str(SEED),
           "--steps", str(steps), "--layers", layers, "--device", "cuda", "--dtype", SETTINGS[kind]["dtype"], "--batch", batch,
           "--quiet", "--out", str(d)] + (extra or [])
    st = SETTINGS[kind]
    cmd += ["--height", str(st["height"]), "--width", str(st["width"]), "--guidance", str(st["guidance"])]
    if kind == "if":
        cmd += ["--clean-caption", "false", "--variant", "fp16"]
    env = dict(env or os.environ)
    if profile:
        env["LENS_PROFILE"] = "1"
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"lens sweep failed: {(r.stderr or r.stdout)[-3000:]}")
    m = json.loads((d / "manifest.json").read_text())
    t = m["timings_s"]
    cold = t["total"] - t["load"]
    # warm: without the first-call setup a warm process would not repeat (CUDA warm-up; the option checks and the
    # process's first libtorch call before loading, timings_s.prepare, none for a sweep on a loaded pipeline), nor the
    # wait for the weights' sha256 (timings_s.weights_hash_wait: read once per model folder, then cached; the first C#
    # run on a fresh FLUX folder waited 9.5 s for its 34 GB)
    warm = cold - t.get("warmup", 0) - t.get("prepare", 0) - t.get("weights_hash_wait", 0)
    return dict(process_s=wall, cold_s=cold, warm_s=warm, batch=m["batch"], unet_calls=m.get("unet_calls_per_image"),
                gpu_memory_peak_gib=m.get("gpu_memory_peak_gib"), timings=t, batch_invariance=m.get("batch_invariance"),
                fused_kernels=m.get("fused_kernels"))


def same_images(a: Path, b: Path) -> dict | None:
    """Layer PNGs of two C# runs compared pixel by pixel: how many are identical, and the largest difference."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return None
    same = worst = n = 0
    for f in sorted(a.glob("layer-*.png")):
        if not (b / f.name).exists():
            continue
        diff = ImageChops.difference(Image.open(f).convert("RGB"), Image.open(b / f.name).convert("RGB")).getextrema()
        m = max(hi for _, hi in diff)
        n, same, worst = n + 1, same + (m == 0), max(worst, m)
    return dict(compared=n, identical=same, max_pixel_diff=worst) if n else None


# ------------------------------------------------------------------------------------------------ report
def phase_line(name: str, d: dict, keys: list[str]) -> str:
    return f"  {name:34s} " + "  ".join(f"{k}={d[k]:.3f}" for k in keys if isinstance(d.get(k), (int, float)))


def section(kind: str, args, app: Path, out: Path, results: dict) -> None:
    quick = args.quick
    if kind == "sd":
        layers = list(range(4 if quick else 12))
        steps, layer_arg = (10 if quick else 50), (f"0:{4 if quick else 12}")
    else:
        # IF's, SDXL's and FLUX's 12 layers: 0, 2, ..., 22
        layers = list(range(0, 8 if quick else 24, 2))
        full_steps = {"if": 100, "sdxl": 20, "flux": 4}[kind]
        steps, layer_arg = (min(full_steps, 20) if quick else full_steps), (f"0:{8 if quick else 24}:2")
    serial = 2 if quick else (12 if kind == "sd" else args.if_serial_layers)
    folder = ensure_model(kind, args)
    r: dict = dict(layers=len(layers), steps=steps)
    results[kind] = r
    try:
        log(f"[{kind}] diffusers ...")
        r["diffusers"] = time_diffusers(kind, folder, layers, steps, serial, out)
    except Exception as e:  # noqa: BLE001
        log(f"[{kind}] diffusers FAILED: {e}")
    runs = [("batch1", "1", steps, layer_arg if serial >= len(layers) else f"0:{serial}" if kind == "sd" else f"0:{2 * serial}:2"),
            ("auto", "auto", steps, layer_arg), ("auto_2steps", "auto", 2, layer_arg)]
    # the default is --batch-invariant auto (on for CUDA: every layer's images those of a canonical 12-layer call, so
    # --batch auto gives --batch 1's); the _off runs measure --batch-invariant off (every call as it is)
    if not args.skip_invariant:
        runs += [(f"{n}_off", b, st, lay) for n, b, st, lay in runs[1:]]
    for name, batch, n_steps, lay in runs:
        extra = ["--batch-invariant", "off"] if name.endswith("_off") else []
        try:
            log(f"[{kind}] C# --batch {batch} --steps {n_steps} --layers {lay} {' '.join(extra)}...")
            r.setdefault("csharp", {})[name] = time_csharp(app, kind, folder, lay, n_steps, batch, out, name, extra=extra)
            log(f"[{kind}] C# {name}: fused kernels {r['csharp'][name].get('fused_kernels')}")
        except Exception as e:  # noqa: BLE001
            log(f"[{kind}] C# {name} FAILED: {e}")
    if args.profile:
        try:
            r.setdefault("csharp", {})["profile"] = time_csharp(app, kind, folder, layer_arg, min(steps, 10), "auto", out,
                                                                 "profile", profile=True)
        except Exception as e:  # noqa: BLE001
            log(f"[{kind}] C# profile FAILED: {e}")
    report(kind, r, serial)


def report(kind: str, r: dict, serial: int) -> None:
    df, cs = r.get("diffusers", {}), r.get("csharp", {})
    k = r["layers"]
    log(f"\n=== {kind}: {k} layers x {r['steps']} steps ===")
    log("phase breakdown (seconds):")
    for name in ("batched_cold", "batched_warm", "batched_2steps", "one_image", "serial"):
        if name in df:
            log(phase_line(f"diffusers {name}", df[name], ["total_s", "encode_s", "pipeline_s", "write_images_s"]))
    if "load_s" in df:
        log(f"  diffusers load                     {df['load_s']:.3f}   peak reserved {df.get('max_memory_reserved_gib', 0):.2f} GiB, "
            f"driver used {df.get('driver_used_gib', 0):.2f} GiB")
    for name, c in cs.items():
        t = c["timings"]
        log(phase_line(f"C# {name} (batch {c['batch']})", t, ["total", "load", "encode", "warmup", "denoise", "denoise_per_step",
                                                              "decode", "images_to_host", "write_images", "other", "weights_hash_wait",
                                                              "image_encoding_background", "gc_pause"])
            + f"  gpu_peak={c.get('gpu_memory_peak_gib')}"
            + ("  padded/per-layer/checked shapes " + ", ".join(
                f"{k} {c['batch_invariance'].get('padded_shapes', {}).get(k, 0)}/{c['batch_invariance']['per_layer_shapes'].get(k, 0)}/{v}"
                for k, v in c["batch_invariance"]["checked_shapes"].items()) if c.get("batch_invariance") else ""))
        if t.get("step_seconds"):
            st, q = t["step_seconds"], t["step_queue_seconds"]
            log(f"    profile: per step {sum(st) / len(st) * 1000:.1f} ms, host queueing {sum(q) / len(q) * 1000:.1f} ms "
                f"({'host-bound' if sum(q) > 0.8 * sum(st) else 'GPU-bound'})")

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "n/a"

    rows = []
    dbc, dbw = df.get("batched_cold", {}).get("total_s"), df.get("batched_warm", {}).get("total_s")
    a = cs.get("auto", {})
    rows.append(("batched: diffusers one call vs C# --batch auto (cold)", dbc, a.get("cold_s")))
    rows.append(("batched: same, warm", dbw, a.get("warm_s")))
    d2, a2 = df.get("batched_2steps", {}).get("total_s"), cs.get("auto_2steps", {})
    rows.append(("fixed costs: 2 steps (diffusers warm, C# warm)", d2, a2.get("warm_s")))
    # the issue's fixed costs (encode, decode, image writing, setup) without the 2-step run's UNet calls: C#'s denoise
    # phase; diffusers' per-call time from its two batched runs
    calls = a2.get("unet_calls")
    if dbw and d2 and calls and a2.get("warm_s") and r["steps"] > 2:
        per_call = (dbw - d2) / (r["steps"] - 2)
        rows.append((f"fixed costs without the 2-step run's {calls} UNet calls", d2 - calls * per_call,
                     a2["warm_s"] - a2["timings"].get("denoise", 0)))
    ser = df.get("serial", {})
    b1 = cs.get("batch1", {})
    n_cs = b1.get("timings", {}).get("per_layer")
    scale = k / max(1, len(n_cs)) if n_cs else 1
    rows.append((f"serial: one call per layer vs --batch 1 (warm, x{k}/{ser.get('layers', k)} scaled)",
                 ser.get("scaled_total_s"), b1.get("warm_s", 0) * scale if b1 else None))
    if "one_image" in df or n_cs:
        # C#: --batch 1's median layer after the first (warm; each layer is one image's guided sampling and writing)
        warm_layers = sorted(list(n_cs.values())[1:]) if n_cs and len(n_cs) > 1 else []
        one = warm_layers[len(warm_layers) // 2] if warm_layers else None
        rows.append(("one image: one call (diffusers) vs a --batch 1 layer (C#, median)", df.get("one_image", {}).get("total_s"), one))
    if dbc and d2 and a.get("warm_s") and a2.get("warm_s"):
        steps = r["steps"]
        rows.append(("per denoising step at full batch (from the two runs)", (dbw - d2) / (steps - 2),
                     (a["warm_s"] - a2["warm_s"]) / (steps - 2)))
    av, av2 = cs.get("auto_off", {}), cs.get("auto_2steps_off", {})
    if av:
        rows.append(("batched, --batch-invariant off: warm", dbw, av.get("warm_s")))
        rows.append(("fixed costs, --batch-invariant off: 2 steps (warm)", d2, av2.get("warm_s")))
        if dbw and d2 and av.get("warm_s") and av2.get("warm_s"):
            rows.append(("per denoising step, --batch-invariant off", (dbw - d2) / (r["steps"] - 2),
                         (av["warm_s"] - av2["warm_s"]) / (r["steps"] - 2)))
    rows.append(("model load", df.get("load_s"), a.get("timings", {}).get("load")))
    for run, label in (("auto", "--batch auto"), ("auto_off", "--batch auto --batch-invariant off")):
        ident = same_images(RUNS / f"cs-{kind}-batch1", RUNS / f"cs-{kind}-{run}")
        if ident:
            r.setdefault("identity", {})[run] = ident
            rows.append((f"{label} vs --batch 1: layer images identical (of {ident['compared']})", None, ident["identical"]))
            rows.append((f"{label} vs --batch 1: largest pixel difference (of 255)", None, ident["max_pixel_diff"]))
            log(f"{label} (batch {cs.get(run, {}).get('batch')}) vs --batch 1: {ident['identical']}/{ident['compared']} layer "
                f"images identical, largest pixel difference {ident['max_pixel_diff']}")
    rows.append(("peak GPU memory GiB (diffusers reserved / C# driver view)", df.get("max_memory_reserved_gib"),
                 a.get("gpu_memory_peak_gib")))
    rows.append(("peak GPU memory GiB, driver view both", df.get("driver_used_gib"), a.get("gpu_memory_peak_gib")))
    log(f"\n{'':66s} {'diffusers':>10s} {'C#':>10s} {'C#/diffusers':>13s}")
    for name, dv, cv in rows:
        log(f"{name:66s} {dv if dv is not None else float('nan'):10.3f} {cv if cv is not None else float('nan'):10.3f} {ratio(cv, dv):>13s}")
    r["table"] = [dict(name=n, diffusers=dv, csharp=cv) for n, dv, cv in rows]


def append_benchmarks(results: dict, gpu: str, versions: str) -> None:
    path = ROOT / "ci" / "BENCHMARKS.md"
    lines = []
    date = datetime.date.today().isoformat()
    for kind, r in results.items():
        for row in r.get("table", []):
            dv, cv = row["diffusers"], row["csharp"]
            ratio = f"{cv / dv:.2f}" if dv and cv else ""
            fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else ""
            lines.append(f"| {date} | {gpu} | {kind} {r['layers']}x{r['steps']} | {row['name']} | {fmt(dv)} | {fmt(cv)} | {ratio} |")
    if not lines:
        return
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    header = "\n## Issue #11 benchmark (ci/bench.py)\n\n| date | GPU | config | measure | diffusers | C# | C#/diffusers |\n| --- | --- | --- | --- | --- | --- | --- |\n"
    if "## Issue #11 benchmark" not in text:
        text = text.rstrip("\n") + "\n" + header
    text = text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    text += f"<!-- {date}: {versions} -->\n"
    path.write_text(text)
    log(f"appended {len(lines)} rows to {path}")


def audit_devices(args, app: Path, out: Path) -> dict:
    """Issue #9: `lens audit --devices cuda:0,cuda:1` against `--devices cuda:0` on the same claims (an SD 1.5-sized
    random pipeline, 12 layers x --audit-steps, float16, --audit-seeds seeds, the tiny CLIP judge), wall time of the
    whole command each; the ratio is two GPUs over one (about 0.5 is the goal)."""
    import torch
    n = torch.cuda.device_count()
    if n < 2:
        raise SystemExit(f"--audit-devices needs two GPUs ({n} visible)")
    folder = ensure_model("sd", args)
    claims = dict(format="lens-claims/1", description="issue #9 device scale-out benchmark",
                  defaults=dict(template="a photo of {}", judge_dir=str(ROOT / "fixtures" / "judge" / "tiny-clip"),
                                analysis=dict(metric="prob", threshold=0.5, rule="stay", min_fraction=0.5)),
                  sources=dict(bench=dict(title="benchmark")),
                  claims=[dict(id="bench-sd", title="bench", statement="bench", model="sd", model_dir=str(folder),
                               prompts=["A few people are in the ocean splashing around"], concepts=["people", "ocean"],
                               seeds=list(range(args.audit_seeds)), expected_order="first", layers="all",
                               steps=args.audit_steps, guidance=7.5, published=[])])
    cfile = out / "bench-claims.json"
    cfile.write_text(json.dumps(claims, indent=1))
    times = {}
    for label, devices in (("1 GPU", "cuda:0"), ("2 GPUs", "cuda:0,cuda:1")):
        dest = WORK / f"audit-{devices.replace(':', '').replace(',', '-')}"
        shutil.rmtree(dest, ignore_errors=True)
        cmd = ["dotnet", str(app / "lens.dll"), "audit", "--claims", str(cfile), "--out", str(dest), "--devices", devices,
               "--dtype", "float16", "--fail-on", "none"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        times[label] = time.perf_counter() - t0
        log(f"  audit on {devices}: {times[label]:.1f}s (exit {p.returncode})")
        if p.returncode != 0:
            log(p.stdout[-2000:] + p.stderr[-3000:])
            raise SystemExit(f"lens audit --devices {devices} failed")
        runs = json.loads((dest / "audit.json").read_text())["claims"][0]["runs"]
        if len(runs) != args.audit_seeds:
            raise SystemExit(f"--devices {devices}: {len(runs)} runs, expected {args.audit_seeds}")
    ratio = times["2 GPUs"] / times["1 GPU"]
    log(f"  two GPUs / one GPU: {ratio:.2f}")
    return dict(seeds=args.audit_seeds, steps=args.audit_steps, times=times, ratio=ratio)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", help="folder with lens.dll (ci/gpu-pack.sh)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", choices=["sd", "if", "sdxl", "flux", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="4 layers and fewer steps: a smoke run")
    ap.add_argument("--skip-invariant", action="store_true", help="no --batch-invariant off runs (they double the C# runs)")
    ap.add_argument("--profile", action="store_true", help="also a C# run with LENS_PROFILE=1 (per-step host vs GPU time)")
    ap.add_argument("--if-serial-layers", type=int, default=3,
                    help="IF, SDXL and FLUX serial loops run over this many layers, scaled to 12")
    ap.add_argument("--if-unet-config", help="a real IF-I-XL unet/config.json to build the IF UNet from")
    ap.add_argument("--no-append", action="store_true", help="do not append to ci/BENCHMARKS.md")
    ap.add_argument("--audit-devices", action="store_true", help="issue #9: lens audit on two GPUs against one (needs 2 GPUs)")
    ap.add_argument("--audit-seeds", type=int, default=8)
    ap.add_argument("--audit-steps", type=int, default=25)
    # internal: the diffusers worker process
    ap.add_argument("--worker", choices=["sd", "if", "sdxl", "flux"])
    ap.add_argument("--folder")
    ap.add_argument("--worker-layers")
    ap.add_argument("--worker-steps", type=int)
    ap.add_argument("--worker-serial", type=int)
    ap.add_argument("--worker-plan", default="full", choices=["full", "batched"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        res = diffusers_worker(args.worker, Path(args.folder), [int(x) for x in args.worker_layers.split(",")],
                               args.worker_steps, args.worker_serial, out, args.worker_plan)
        print(json.dumps(res))
        return
    import torch
    gpu = torch.cuda.get_device_name()
    try:
        import diffusers
        import transformers
        versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}"
    except Exception:  # noqa: BLE001
        versions = f"torch {torch.__version__}"
    log(f"{gpu}; {versions}")
    WORK.mkdir(parents=True, exist_ok=True)
    if args.audit_devices:
        r = audit_devices(args, Path(args.app), out)
        (out / "bench-audit.json").write_text(json.dumps(dict(gpu=gpu, versions=versions, **r), indent=2))
        if not args.no_append:
            path = ROOT / "ci" / "BENCHMARKS.md"
            date = datetime.date.today().isoformat()
            text = path.read_text().rstrip("\n") + "\n"
            if "## Issue #9: audit runs spread over GPUs" not in text:
                text += ("\n## Issue #9: audit runs spread over GPUs (ci/bench.py --audit-devices)\n\n"
                         "| date | GPUs | config | one GPU (s) | two GPUs (s) | two/one |\n| --- | --- | --- | --- | --- | --- |\n")
            text += (f"| {date} | 2x {gpu} | sd 12 layers x {r['steps']} steps, {r['seeds']} seeds, float16, whole `lens audit` |"
                     f" {r['times']['1 GPU']:.1f} | {r['times']['2 GPUs']:.1f} | {r['ratio']:.2f} |\n")
            path.write_text(text)
            shutil.copy(path, out / "BENCHMARKS.md")
        return
    results: dict = {}
    t0 = time.perf_counter()
    for kind in (["sd", "if"] if args.only == "all" else [args.only]):
        try:
            section(kind, args, Path(args.app), out, results)
        except Exception:  # noqa: BLE001
            log(f"[{kind}] section FAILED:\n{traceback.format_exc()}")
    log(f"\nbench took {time.perf_counter() - t0:.0f}s")
    (out / "bench.json").write_text(json.dumps(dict(gpu=gpu, versions=versions, quick=args.quick, results=results), indent=2))
    if not args.no_append and not args.quick:
        append_benchmarks(results, gpu, versions)
        shutil.copy(ROOT / "ci" / "BENCHMARKS.md", out / "BENCHMARKS.md")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The sha256 of every weights file a diffusers pipeline loads, as reference.json records it (model.weights_sha256).

Standard library only: make_reference.py calls weights_sha256() when it records a reference, and this script adds the
hashes to references recorded before (the committed tiny models' references):

    python3 fixtures/weight_hashes.py fixtures/references/*/reference.json fixtures/references-guidance/*/reference.json

The files are chosen by diffusers' loading rule (the C# WeightSet / ComponentVariant do the same): per component,
with a variant its variant files where the component has any, else its plain files; a sharded set is its index's
shards. The result is {component: {path relative to the model folder: sha256 hex}}; the C# tests verify the model
folder against it before comparing (ReferenceData.VerifyWeights).
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

BASE_NAMES = ("diffusion_pytorch_model", "model")
COMPONENTS = {"StableDiffusionPipeline": ("text_encoder", "unet", "vae"), "IFPipeline": ("text_encoder", "unet"),
              "StableDiffusionXLPipeline": ("text_encoder", "text_encoder_2", "unet", "vae"),
              "IFSuperResolutionPipeline": ("unet",),
              "FluxPipeline": ("text_encoder", "text_encoder_2", "transformer", "vae")}
_VARIANT_FILE = re.compile(r"^(?:diffusion_pytorch_model|model)(?:\.([A-Za-z0-9_-]+?)(?:-\d{5}-of-\d{5})?\.safetensors"
                           r"|\.safetensors\.index\.([A-Za-z0-9_-]+)\.json)$")


def variants_in(folder: Path) -> set[str]:
    found = set()
    for f in folder.iterdir():
        m = _VARIANT_FILE.match(f.name)
        if m:
            v = m.group(1) or m.group(2)
            if v and not re.fullmatch(r"\d{5}-of-\d{5}", v):
                found.add(v)
    return found


def weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The safetensors files diffusers reads for one component folder (variant: this component's, or None)."""
    for base in BASE_NAMES:
        index = folder / (f"{base}.safetensors.index.{variant}.json" if variant else f"{base}.safetensors.index.json")
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / s for s in shards]
        single = folder / (f"{base}.{variant}.safetensors" if variant else f"{base}.safetensors")
        if single.is_file():
            return [single]
    raise SystemExit(f"no {'%s ' % variant if variant else ''}safetensors weights in {folder}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(model_dir: Path, variant: str | None = None) -> dict:
    model_dir = Path(model_dir)
    index = json.loads((model_dir / "model_index.json").read_text())
    out = {}
    for component in COMPONENTS[index["_class_name"]]:
        folder = model_dir / component
        v = variant if variant and variant in variants_in(folder) else None
        out[component] = {f.relative_to(model_dir).as_posix(): sha256(f) for f in weight_files(folder, v)}
    return out


def add_to_reference(ref_file: Path, repo_root: Path) -> None:
    """Adds model.weights_sha256 to a reference.json whose model.path is in this repository, rewriting only the
    "model" block (in make_reference.py's json.dumps(indent=2) format) and leaving every other line as it was."""
    text = ref_file.read_text()
    ref = json.loads(text)
    model = ref["model"]
    model["weights_sha256"] = weights_sha256(repo_root / model["path"], model.get("variant"))
    start = text.index('\n  "model": {') + 1
    end = text.index("\n  },\n", start) + len("\n  },\n")
    block = '  "model": ' + json.dumps(model, indent=2, ensure_ascii=False).replace("\n", "\n  ") + ",\n"
    new_text = text[:start] + block + text[end:]
    assert json.loads(new_text) == ref, f"{ref_file}: rewriting the model block changed something else"
    ref_file.write_text(new_text)


if __name__ == "__main__":
    root = Path.cwd()  # model paths in reference.json are relative to the repository root: run from there
    for arg in sys.argv[1:]:
        add_to_reference(Path(arg), root)
        print(f"{arg}: weights_sha256 recorded")

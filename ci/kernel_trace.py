#!/usr/bin/env python3
"""Kernel-by-kernel comparison of one denoising step, diffusers against the C# sweep, on the same GPU (issue #11:
"profile first, on both sides").

Both sides run the same libtorch, so their CUDA kernels have the same names. Each side runs the bench's batched
workload (ci/bench.py: all layers in one call / `lens sweep --batch <layers>`) twice, at --steps A and B, in fresh
processes traced by ci/kernel-trace/lens_cupti_trace.c (a CUPTI injection library, compiled here with gcc against the
CUPTI headers beside PyTorch). The difference of the two runs, divided by B - A, is one denoising step: its GPU
timeline span, the time kernels were busy, the idle gaps (host-bound or synchronising code shows here), the number of
kernels, and the time per kernel name. Prints the names whose per-step time differs most, writes kernel-trace.json.

  python3 ci/kernel_trace.py --app <published lens app> --out <dir> [--kind sd|if] [--steps 4,12] [--quick]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

REC = struct.Struct("<QQII")


def build_tracer(work: Path) -> Path:
    import torch
    site = Path(torch.__file__).resolve().parent.parent
    inc = next(iter(glob.glob(str(site / "nvidia" / "*" / "include" / "cupti.h"))), None)
    if inc is None:
        raise SystemExit("kernel_trace: no cupti.h beside PyTorch (nvidia/*/include)")
    inc_dir = Path(inc).parent
    lib = next(iter(glob.glob(str(site / "nvidia" / "*" / "lib" / "libcupti.so*"))))
    header = (inc_dir / "cupti_activity.h").read_text(errors="replace")
    for extra in ("cupti_activity_deprecated.h",):
        if (inc_dir / extra).exists():
            header += (inc_dir / extra).read_text(errors="replace")

    def newest(base: str) -> str:
        found = sorted({int(n) for n in re.findall(base + r"(\d+)\b", header)})
        return f"{base}{found[-1]}" if found else base

    defs = {"LENS_KERNEL_RECORD": newest("CUpti_ActivityKernel"), "LENS_MEMCPY_RECORD": newest("CUpti_ActivityMemcpy"),
            "LENS_MEMSET_RECORD": newest("CUpti_ActivityMemset")}
    so = work / "liblens_cupti_trace.so"
    # the wheel's headers lack crt/host_defines.h (the CUDA toolkit's include folder has it)
    extra_inc = [f"-I{d}" for d in (os.environ.get("CUDA_HOME", "/usr/local/cuda") + "/include",) if Path(d, "crt").is_dir()]
    cmd = ["gcc", "-O2", "-shared", "-fPIC", f"-I{inc_dir}", *extra_inc, *[f"-D{k}={v}" for k, v in defs.items()],
           str(HERE / "kernel-trace" / "lens_cupti_trace.c"), "-o", str(so), f"-L{Path(lib).parent}",
           f"-l:{Path(lib).name}", f"-Wl,-rpath,{Path(lib).parent}"]
    subprocess.run(cmd, check=True)
    print(f"built {so} ({', '.join(defs.values())})", flush=True)
    return so


def load_trace(prefix: Path) -> tuple[list[str], list[tuple[int, int, int, int]]]:
    names = {}
    for line in Path(f"{prefix}.names.tsv").read_text().splitlines():
        i, n = line.split("\t", 1)
        names[int(i)] = n
    data = Path(f"{prefix}.trace.bin").read_bytes()
    recs = [REC.unpack_from(data, o) for o in range(0, len(data) - len(data) % REC.size, REC.size)]
    recs.sort()
    return [names[i] for i in range(len(names))], recs


def summarize(prefix: Path) -> dict:
    names, recs = load_trace(prefix)
    # the timeline from the end of loading (the last host-to-device copy longer than 1 ms: weights) on, so that the
    # span and idle time are the generation's, not the load's
    loads = [e for s, e, i, k in recs if k == 1 and names[i] == "memcpy HtoD" and e - s > 1_000_000]
    if loads:
        recs = [r for r in recs if r[0] >= max(loads)]
    per = defaultdict(lambda: [0.0, 0])
    busy, cur_s, cur_e = 0, None, None
    for s, e, i, _ in recs:
        per[names[i]][0] += (e - s) / 1e9
        per[names[i]][1] += 1
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    span = (recs[-1][1] - recs[0][0]) / 1e9 if recs else 0.0
    kernels = sum(1 for r in recs if r[3] == 0)
    return dict(span_s=span, busy_s=busy / 1e9, kernels=kernels, per_name={k: tuple(v) for k, v in per.items()})


def per_step(a: dict, b: dict, steps: int) -> dict:
    names = set(a["per_name"]) | set(b["per_name"])
    d = {n: ((b["per_name"].get(n, (0, 0))[0] - a["per_name"].get(n, (0, 0))[0]) / steps,
             (b["per_name"].get(n, (0, 0))[1] - a["per_name"].get(n, (0, 0))[1]) / steps) for n in names}
    return dict(span_s=(b["span_s"] - a["span_s"]) / steps, busy_s=(b["busy_s"] - a["busy_s"]) / steps,
                kernels=(b["kernels"] - a["kernels"]) / steps, per_name=d)


def short(name: str, n: int = 110) -> str:
    return name if len(name) <= n else name[: n - 3] + "..."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", required=True, help="folder of the published lens app (lens.dll)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", choices=["sd", "if"], default="sd")
    ap.add_argument("--steps", default="4,12", help="the two step counts A,B")
    ap.add_argument("--layers", type=int, default=12, help="layers (rows = 2 x layers per UNet call)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--identity", action="store_true", help="also --batch 1 at B steps: are the images identical?")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the C# runs (e.g. a setting to compare)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("LENS_BENCH_DIR", "/tmp/lens-bench"))
    work.mkdir(parents=True, exist_ok=True)
    so = build_tracer(work)
    a_steps, b_steps = (int(x) for x in args.steps.split(","))

    class A:  # what bench.ensure_model reads
        if_unet_config = None
    folder = bench.ensure_model(args.kind, A)
    if args.kind == "sd":
        layers = list(range(args.layers))
        layer_arg = f"0:{args.layers}"
    else:
        layers = list(range(0, 2 * args.layers, 2))
        layer_arg = f"0:{2 * args.layers}:2"
    traces = work / "traces"
    shutil.rmtree(traces, ignore_errors=True)
    traces.mkdir()
    summaries: dict = {}
    for side in ("diffusers", "csharp"):
        for n in (a_steps, b_steps):
            prefix = traces / f"{side}-{n}"
            env = dict(os.environ, CUDA_INJECTION64_PATH=str(so), LENS_CUPTI_OUT=str(prefix))
            print(f"[{args.kind}] {side} {n} steps ...", flush=True)
            if side == "diffusers":
                bench.time_diffusers(args.kind, folder, layers, n, 1, out, plan="batched", env=env)
            else:
                for kv in args.env:
                    k, v = kv.split("=", 1)
                    env[k] = v
                r = bench.time_csharp(Path(args.app), args.kind, folder, layer_arg, n, str(len(layers)), out, f"trace{n}", env=env)
                print(f"    timings {json.dumps({k: v for k, v in r['timings'].items() if not isinstance(v, (dict, list))})}", flush=True)
            summaries[f"{side}-{n}"] = summarize(prefix)
    steps = b_steps - a_steps
    d = per_step(summaries[f"diffusers-{a_steps}"], summaries[f"diffusers-{b_steps}"], steps)
    c = per_step(summaries[f"csharp-{a_steps}"], summaries[f"csharp-{b_steps}"], steps)
    print(f"\n=== one denoising step, {len(layers)} layers ({2 * len(layers)} rows), from {a_steps} and {b_steps} steps ===")
    print(f"{'':28s} {'diffusers':>12s} {'C#':>12s}")
    for key, label, scale in (("span_s", "GPU timeline span (ms)", 1e3), ("busy_s", "kernels busy (ms)", 1e3), ("kernels", "kernels launched", 1)):
        print(f"{label:28s} {d[key] * scale:12.2f} {c[key] * scale:12.2f}")
    print(f"{'idle gaps (ms)':28s} {(d['span_s'] - d['busy_s']) * 1e3:12.2f} {(c['span_s'] - c['busy_s']) * 1e3:12.2f}")
    names = set(d["per_name"]) | set(c["per_name"])
    rows = sorted(names, key=lambda n: -abs(c["per_name"].get(n, (0, 0))[0] - d["per_name"].get(n, (0, 0))[0]))
    print(f"\nkernels whose per-step time differs most (ms per step, launches per step):")
    print(f"{'diffusers ms':>12s} {'n':>6s} {'C# ms':>9s} {'n':>6s}  name")
    for n in rows[: args.top]:
        dt, dn = d["per_name"].get(n, (0, 0))
        ct, cn = c["per_name"].get(n, (0, 0))
        print(f"{dt * 1e3:12.3f} {dn:6.0f} {ct * 1e3:9.3f} {cn:6.0f}  {short(n)}")
    print(f"\ntop kernels of the diffusers step:")
    for n in sorted(d["per_name"], key=lambda n: -d["per_name"][n][0])[:15]:
        dt, dn = d["per_name"][n]
        ct, cn = c["per_name"].get(n, (0, 0))
        print(f"{dt * 1e3:12.3f} {dn:6.0f} {ct * 1e3:9.3f} {cn:6.0f}  {short(n)}")
    ident = None
    if args.identity:
        # batch invariance: the B-step traced run (all layers in one batch) against --batch 1, PNG by PNG
        print(f"\n[{args.kind}] C# --batch 1, {b_steps} steps (identity check) ...", flush=True)
        bench.time_csharp(Path(args.app), args.kind, folder, layer_arg, b_steps, "1", out, "batch1")
        ident = bench.same_images(bench.RUNS / f"cs-{args.kind}-batch1", bench.RUNS / f"cs-{args.kind}-trace{b_steps}")
        if ident:
            print(f"--batch {len(layers)} vs --batch 1: {ident['identical']}/{ident['compared']} layer images identical, "
                  f"largest pixel difference {ident['max_pixel_diff']}")
    res = dict(kind=args.kind, identity=ident, steps=[a_steps, b_steps], layers=len(layers), diffusers=d, csharp=c,
               runs={k: {kk: vv for kk, vv in v.items() if kk != "per_name"} for k, v in summaries.items()})
    (out / "kernel-trace.json").write_text(json.dumps(res, indent=1))
    subprocess.run(["tar", "-C", str(work), "-cJf", str(out / "traces.tar.xz"), "traces"], check=False)


if __name__ == "__main__":
    main()

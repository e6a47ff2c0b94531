"""`make bench`: every benchmark, one after another, then `bench/results.json` and
`bench/results.md` (the table the README's Performance section shows).

1. framework overhead   bench_framework.py   raw loop vs plain Lightning vs losslab (+ memory)
2. monitoring overhead  bench_grad_overhead.py  with vs without the gradient callbacks
3. losses               bench_losses.py      forward+backward vs torch built-ins
4. start-up             bench_startup.py     `python train.py` -> first step; import times
5. time to accuracy     bench_tta.py         seconds to 0.68 MNIST-1D test accuracy
6. GPU                  bench_framework.py --device cuda (only when CUDA is available)
7. sharpness            bench_sharpness.py   cost of one Hessian eigenvalue + trace evaluation

Each benchmark interleaves its variants inside one process and reports medians: the framework
benchmark epoch by epoch and the monitoring one in blocks of 10 steps, inside one fit (see
their docstrings), the losses call by call.
All run with one torch thread (`OMP_NUM_THREADS=1`) unless `--threads` says otherwise.

    make bench                       # ~6.5-8 minutes on 2 CPU cores
    python scripts/bench.py --quick  # fewer repetitions (~3 minutes), for a smoke test
    python scripts/bench.py --only framework startup
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from losslab.benchmarking import machine_description, one_of

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "bench"


def benchmarks(quick: bool, threads: int) -> dict[str, list[str]]:
    t = ["--threads", str(threads)]

    def reps(full: int, short: int) -> list[str]:
        return ["--reps", str(short if quick else full)]

    return {
        "framework": ["bench_framework.py", *t, *reps(7, 2), "--memory"],
        "monitoring": ["bench_grad_overhead.py", *t, *reps(11, 2)],
        "losses": ["bench_losses.py", *t, "--skip-slow",
                   "--repeats", "60" if quick else "80"],
        "startup": ["bench_startup.py", *reps(3, 1)],
        "tta": ["bench_tta.py", *t, *reps(2, 1)],
        "gpu": ["bench_framework.py", "--device", "cuda", *reps(5, 2)],
        "sharpness": ["bench_sharpness.py", *t],
    }


def fmt(x: Any, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def gpu_summary(gpu: dict[str, Any] | None) -> str:
    """The GPU row: samples/s of (a), (b) and (c) on the CNN, with (b) and (c)'s step-time
    ratios to (a) (`bench_framework.py --device cuda`'s results)."""
    if not gpu:
        return "skipped: no CUDA"
    v = gpu["variants"]
    parts = [f"(a) {v['raw']['samples_per_s']:,.0f} samples/s"]
    for key, name in (("lightning", "(b)"), ("losslab", "(c)")):
        if key in v:
            parts.append(f"{name} {v[key]['samples_per_s']:,.0f} samples/s = "
                         f"**{v[key]['ratio_to_raw']:.2f}x** (a)'s step time")
    where = gpu.get("device_name", "GPU")
    return (f"{'; '.join(parts)} ({gpu.get('model', 'CNN')}, batch {gpu.get('batch_size', '?')}, "
            f"{where})")


def markdown(r: dict[str, Any]) -> str:
    """The results as the README's Performance table."""
    lines = [f"Measured {r['date']} on {r['machine']} (`make bench`, one torch thread).", "",
             "| benchmark | measured | target | met |", "|---|---|---|---|"]

    def row(name: str, value: str, target: str, met: bool | None) -> None:
        lines.append(f"| {name} | {value} | {target} | "
                     f"{'-' if met is None else 'yes' if met else '**no**'} |")

    fw = r.get("framework", {}).get("variants", {})
    if fw:
        raw = fw["raw"]
        row("(a) plain PyTorch loop, default MLP", f"{raw['ms_per_step']:.2f} ms/step "
            f"({raw['steps_per_s']:.0f} steps/s)", "the limit", None)
        for key, name in (("lightning", "(b) plain Lightning + DataLoader"),
                          ("losslab", "(c) losslab default stack")):
            v = fw[key]
            target = "<= 1.5x (a)" if key == "losslab" else "for reference"
            row(name, f"{v['ms_per_step']:.2f} ms/step = **{v['ratio_to_raw']:.2f}x** (a) "
                f"(median of paired epochs; summed {v.get('ratio_of_sums', float('nan')):.2f}x)",
                target, v["ratio_to_raw"] <= 1.5 if key == "losslab" else None)
    mem = r.get("framework", {}).get("memory_mb")
    if mem:
        row("peak memory (c) vs (a)", f"{mem['losslab']['peak']:.0f} MB vs "
            f"{mem['raw']['peak']:.0f} MB; framework allowance {mem['framework_allowance']:.0f}"
            " MB", "<= 1.2 x (a) + allowance", mem["within_budget"])
    mon = r.get("monitoring", {})
    for model, target in (("mnist1d MLP", 1.05), ("MLP 20x512", 1.03)):
        for name, variants in mon.items():
            if name.startswith(model):
                v = variants.get("all three (defaults)")
                if v:
                    row(f"gradient callbacks on, {name.split(',')[0]}",
                        f"**{v['ratio']:.3f}x** wall (90% CI {v['ci90_low']:.3f}-"
                        f"{v['ci90_high']:.3f}, {v['pairs']} pairs of "
                        f"{v.get('steps_per_block', 0):.0f}-step blocks; {v['cpu_ratio']:.3f}x "
                        f"CPU; summed {v['ratio_of_sums']:.3f}x; hooks "
                        f"{100 * v['hooks_cpu_fraction']:.1f}% of the step)",
                        f"<= {target}x", v["ratio"] <= target)
    losses = r.get("losses", [])
    worst = [x for x in losses if x.get("ratio", "-") not in ("-", "")
             and x.get("reference", "").startswith("F.")]
    if worst:
        w = max(worst, key=lambda x: float(x["ratio"]))
        row("losses vs torch built-in (worst)", f"{w['loss']}: {w['ratio']}x", "<= 1.2x",
            float(w["ratio"]) <= 1.2)
    for x in losses:
        if x.get("focal vs"):
            ratio = float(x["focal vs"].split("x")[0])
            row(f"{x['loss']} vs {x['focal vs'].split()[1]}", x["focal vs"], "<= 1.3x",
                ratio <= 1.3)
    st = r.get("startup")
    if st:
        refs = ""
        if "raw_first_step_s" in st:
            refs = (f"; references: plain PyTorch script -> first step "
                    f"{st['raw_first_step_s']:.2f} s, `import lightning.pytorch` "
                    f"{st['import_lightning_s']:.2f} s")
        row("start-up: `python train.py` -> first step", f"{st['first_step_s']:.2f} s "
            f"(import losslab {st['import_losslab_s']:.3f} s{refs})", "<= 4 s",
            st["first_step_s"] <= 4)
    tta = r.get("tta")
    if tta:
        row("time to 0.68 test accuracy", f"plain loop {fmt(tta['raw']['seconds'])} s, losslab "
            f"{fmt(tta['losslab']['seconds'])} s ({fmt(tta['ratio'])}x)", "report", None)
    row("GPU step time", gpu_summary(r.get("gpu")), "report", None)
    sh = r.get("sharpness")
    if sh:
        seconds = sh.get("seconds_per_evaluation", sh.get("seconds"))
        row("sharpness callback: one evaluation", f"{fmt(seconds)} s", "report", None)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", type=one_of(benchmarks(False, 1)),
                        help="benchmark names (framework, monitoring, ...)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, Any] = {}
    if args.only and (args.out / "results.json").exists():  # update the other entries' table
        results = json.loads((args.out / "results.json").read_text())
    results.update({"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
                    "quick": args.quick})
    status, t_all = 0, time.time()
    for name, (script, *opts) in benchmarks(args.quick, args.threads).items():
        if args.only and name not in args.only:
            continue
        if name == "gpu" and not torch.cuda.is_available():
            print("\n### gpu: skipped (CUDA is not available)", flush=True)
            continue
        path = args.out / f"{name}.json"
        path.unlink(missing_ok=True)
        print(f"\n### {name}: {script} {' '.join(opts)}\n", flush=True)
        t0 = time.time()
        code = subprocess.call([sys.executable, str(HERE / script), *opts, "--json", str(path)],
                               cwd=ROOT, env=env)
        print(f"({name}: {time.time() - t0:.0f} s)", flush=True)
        status |= code
        if path.exists():
            results[name] = json.loads(path.read_text())
    results["seconds"] = time.time() - t_all
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    print("\n" + table)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} "
          f"in {results['seconds']:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The GPU checks, as one prepared run for a session that is lent a GPU machine.

No GPU has run losslab's CUDA paths yet; this runs the ones the issues name, in one go, and
judges each from what it wrote (not only its exit status):

    env          torch, Lightning and the GPU seen
    gpu_fp32     `train.py trainer=gpu`: a whole run, with the gradient callbacks' device path
    gpu_16mixed  fp16 AMP + norm clipping: the clipper sees unscaled gradients
    gpu_bf16_log bf16 autocast, logging every step: every step's gradient norm, finite
    bench_gpu    `bench_framework.py --device cuda`: the GPU row of `make bench`
    ddp          `trainer=ddp` (NCCL; one process per GPU, one on a one-GPU machine): a whole
                 run, the TensorBoard events written by rank zero

Each check has a time limit, and all of them together `--budget-s` (default 480 s, inside
the device tool's 10-minute command limit): a check that would run past it gets what is left,
or is skipped with less than 20 s left.

    python scripts/gpu_checks.py --out DIR        # DIR/gpu_checks.md, .json, gpu_bench.json
    python scripts/gpu_checks.py --dry-run        # the commands only
    python scripts/gpu_checks.py --cpu            # the same on CPU (trainer=gpu -> default,
                                                  # ddp -> ddp_cpu, cuda -> cpu): checks the
                                                  # commands and the judges (a test does)

On the lent machine (its image has torch and Lightning but not Hydra or mnist1d, and nothing
can be fetched there), `scripts/gpu_checks.sh` installs the wheels that `make gpu-kit` put in
`gpu_kit/` and runs this; see the README's Performance section.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from losslab.benchmarking import one_of

ROOT = Path(__file__).resolve().parents[1]
TAIL = 1500  # characters of each check's output kept in the report


@dataclass
class Check:
    """One command and the judgement of what it wrote in its folder (`run`)."""

    name: str
    what: str
    argv: list[str]
    judge: Callable[[Path, str], tuple[bool, str]] | None = None  # (run folder, output)
    timeout_s: int = 240
    result: dict[str, Any] = field(default_factory=dict)


def train(*overrides: str) -> list[str]:
    """`python train.py` with the run folder and data folder filled in by `run_check`."""
    return [sys.executable, str(ROOT / "train.py"), *overrides, "paths.output_dir={run}",
            "paths.data_dir={data}"]


def metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def csv_series(run: Path, tag: str) -> dict[int, float]:
    out: dict[int, float] = {}
    with open(run / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get(tag) not in ("", None):
                out[int(row["step"])] = float(row[tag])
    return out


def judge_env(run: Path, output: str) -> tuple[bool, str]:
    line = output.strip().splitlines()[-1] if output.strip() else ""
    return "cuda=True" in line, line


def judge_fp32(run: Path, output: str) -> tuple[bool, str]:
    m = metrics(run)
    health = json.loads((run / "grad_health.json").read_text())["summary"]
    ok = "test/acc" in m and health["steps_judged"] > 0
    return ok, (f"test/acc {m.get('test/acc', float('nan')):.3f}, "
                f"{health['steps_judged']} steps judged, events {health['events']}")


def judge_16mixed(run: Path, output: str) -> tuple[bool, str]:
    before = csv_series(run, "grad/norm_total_before_clip")
    after = csv_series(run, "grad/norm_total_after_clip")
    monitor = csv_series(run, "grad/norm_total")
    # unscaled: the clipper's norm is the monitor's (both after GradScaler.unscale_), far
    # below the loss scale's 2^16
    same = all(math.isclose(before[s], monitor[s], rel_tol=1e-3) for s in before if s in monitor)
    ok = bool(after) and same and max(before.values()) < 1e3 \
        and all(v <= 0.5 * (1 + 1e-3) for v in after.values())
    return ok, (f"{len(after)} logged steps; before-clip norm {min(before.values()):.3g}-"
                f"{max(before.values()):.3g} (equal to the monitor's: {same}), after-clip max "
                f"{max(after.values()):.3g} (max_norm 0.5); test/acc "
                f"{metrics(run).get('test/acc', float('nan')):.3f}")


def judge_bf16_log(run: Path, output: str) -> tuple[bool, str]:
    norms = csv_series(run, "grad/norm_total")
    steps = int(metrics(run).get("perf/train_steps", -1))
    finite = all(math.isfinite(v) for v in norms.values())
    return len(norms) == steps and finite, f"{len(norms)} of {steps} steps logged, finite {finite}"


def judge_ddp(run: Path, output: str) -> tuple[bool, str]:
    m = metrics(run)
    events = sorted((run / "tensorboard").rglob("events.out.tfevents.*"))
    size = sum(e.stat().st_size for e in events)
    return "test/acc" in m and size > 0, (f"test/acc {m.get('test/acc', float('nan')):.3f}; "
                                          f"{len(events)} event files, {size:,} bytes")


def judge_bench(run: Path, output: str) -> tuple[bool, str]:
    results = json.loads((run / "gpu_bench.json").read_text())
    v = results["variants"]
    text = "; ".join(f"{k} {row['samples_per_s']:,.0f} samples/s" + (
        f" ({row['ratio_to_raw']:.2f}x (a)'s step time)" if "ratio_to_raw" in row else "")
        for k, row in v.items())
    return set(v) == {"raw", "lightning", "losslab"}, f"{results['model']}: {text}"


CHECKS = [
    Check("env", "torch, Lightning and the GPU seen",
          [sys.executable, "-c", "import torch, lightning; print(f'torch={torch.__version__} "
           "lightning={lightning.__version__} cuda={torch.cuda.is_available()} "
           "gpus={torch.cuda.device_count()} "
           "name={torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}')"],
          judge_env, 60),
    Check("gpu_fp32", "a whole default run on the GPU (gradient callbacks' device path)",
          train("trainer=gpu", "trainer.max_epochs=3"), judge_fp32),
    Check("gpu_16mixed", "fp16 AMP + norm clipping: the clipper sees unscaled gradients",
          train("trainer=gpu", "trainer.precision=16-mixed", "trainer.max_epochs=2",
                "logger=csv", "callbacks.grad_clip.mode=norm",
                "callbacks.grad_clip.max_norm=0.5"), judge_16mixed),
    Check("gpu_bf16_log", "bf16 autocast, every step's gradient norm logged",
          train("trainer=gpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=2",
                "logger=csv", "trainer.log_every_n_steps=1"), judge_bf16_log),
    Check("bench_gpu", "the GPU row of make bench",
          [sys.executable, str(ROOT / "scripts" / "bench_framework.py"), "--device", "cuda",
           "--reps", "2", "--json", "{run}/gpu_bench.json"], judge_bench, 300),
    # last: a collective that hangs would otherwise take the time of the others
    Check("ddp", "trainer=ddp (NCCL), TensorBoard events from rank zero",
          train("trainer=ddp", "trainer.max_epochs=2"), judge_ddp, 300),
]


ON_CPU = {"trainer=gpu": "trainer=default", "trainer=ddp": "trainer=ddp_cpu", "cuda": "cpu"}


def on_cpu(check: Check) -> Check:
    """The check with its GPU-only arguments swapped for their CPU counterparts."""
    judge = (lambda run, out: (" cuda=False" in out, out.strip())) \
        if check.judge is judge_env else check.judge
    return Check(check.name, check.what, [ON_CPU.get(a, a) for a in check.argv], judge,
                 check.timeout_s)


def run_check(check: Check, runs: Path, data: Path, timeout_s: float | None = None
              ) -> dict[str, Any]:
    """Run one check in its own folder under `runs` (for at most `timeout_s`, default the
    check's own limit); judge it; never raise."""
    run = runs / check.name
    run.mkdir(parents=True, exist_ok=True)
    argv = [a.replace("{run}", str(run)).replace("{data}", str(data)) for a in check.argv]
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s or check.timeout_s, env={**os.environ,
                                                            "PYTHONUNBUFFERED": "1"})
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
    seconds = time.perf_counter() - start
    passed, detail = False, f"exit status {rc}"
    if rc == 0 and check.judge is not None:
        try:
            passed, detail = check.judge(run, output)
        except Exception as e:  # noqa: BLE001 - a missing file is a failed check, not a crash
            passed, detail = False, f"could not judge: {type(e).__name__}: {e}"
    elif rc == 0:
        passed, detail = True, "exit status 0"
    return {"name": check.name, "what": check.what, "command": " ".join(argv), "rc": rc,
            "seconds": round(seconds, 1), "passed": passed, "detail": detail,
            "tail": output[-TAIL:]}


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| check | what | passed | seconds | result |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['what']} | {'yes' if r['passed'] else '**no**'} | "
              f"{r['seconds']} | {r['detail']} |" for r in results]
    for r in results:
        if not r["passed"]:
            lines += ["", f"### {r['name']} (exit status {r['rc']})", "", f"    {r['command']}",
                      "", "```", r["tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, checks: list[Check] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_checks")
    parser.add_argument("--only", nargs="+", type=one_of(c.name for c in checks or CHECKS),
                        help="these checks only")
    parser.add_argument("--dry-run", action="store_true", help="print the commands")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--cpu", action="store_true", help="run the checks' CPU counterparts")
    parser.add_argument("--budget-s", type=float, default=480, help="all checks together")
    args = parser.parse_args(argv)
    chosen = [c for c in (checks or CHECKS) if not args.only or c.name in args.only]
    if args.cpu:
        chosen = [on_cpu(c) for c in chosen]
    if args.dry_run:
        for c in chosen:
            print(f"{c.name}: {' '.join(c.argv)}")
        return []
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_checks_") as tmp:
        for c in chosen:
            left = args.budget_s - (time.perf_counter() - start)
            if left < 20:
                r = {"name": c.name, "what": c.what, "command": " ".join(c.argv), "rc": None,
                     "seconds": 0.0, "passed": False, "detail": "skipped: out of time",
                     "tail": ""}
            else:
                r = run_check(c, Path(tmp), args.data, min(c.timeout_s, left))
            print(f"{r['name']:13s} {'ok  ' if r['passed'] else 'FAIL'} {r['seconds']:6.1f} s  "
                  f"{r['detail']}", flush=True)
            results.append(r)
            bench = Path(tmp) / c.name / "gpu_bench.json"
            if bench.exists():
                (args.out / "gpu_bench.json").write_text(bench.read_text())
    (args.out / "gpu_checks.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu_checks.md").write_text(report(results))
    print(f"wrote {args.out}/gpu_checks.md and .json")
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r["passed"] for r in main()) else 1)

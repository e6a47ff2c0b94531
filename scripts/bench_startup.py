"""Start-up: seconds from launching `python train.py` to its first training step, and the
import time of `losslab` and of the training stack (`losslab.run`: Lightning, torch, ...).

Each measurement is a fresh process (median of `--reps`): the first-step time comes from
`losslab.callbacks.timing.FirstStepTimer` (a callback added on the command line, which stops
the run after that step); import times are `python -c "import X"` minus `python -c "pass"`.

    python scripts/bench_startup.py --reps 3 --json bench/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from losslab.benchmarking import write_json

ROOT = Path(__file__).resolve().parents[1]


def launch(args: list[str]) -> float:
    """Wall seconds of one `python <args>` process."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.time()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0


def first_step(tmp: Path) -> float:
    """Seconds from launching `python train.py` to the start of its first training step."""
    marker = tmp / "first_step.json"
    marker.unlink(missing_ok=True)
    t0 = time.time()
    subprocess.run([sys.executable, "train.py", "test=false", f"hydra.run.dir={tmp / 'run'}",
                    f"paths.data_dir={ROOT / 'data'}",
                    "+callbacks.first_step._target_=losslab.callbacks.timing.FirstStepTimer",
                    f"+callbacks.first_step.path={marker}"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(marker.read_text())["first_step_unix"] - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        first_step(Path(tmp))  # warm the file-system cache and the data cache
        samples: dict[str, list[float]] = {"python": [], "losslab": [], "losslab.run": [],
                                           "first_step": []}
        for _ in range(args.reps):
            samples["python"].append(launch(["-c", "pass"]))
            samples["losslab"].append(launch(["-c", "import losslab"]))
            samples["losslab.run"].append(launch(["-c", "import losslab.run"]))
            samples["first_step"].append(first_step(Path(tmp)))
    med = {k: statistics.median(v) for k, v in samples.items()}
    results = {
        "first_step_s": med["first_step"],
        "import_losslab_s": med["losslab"] - med["python"],
        "import_training_stack_s": med["losslab.run"] - med["python"],
        "python_s": med["python"], "reps": args.reps,
    }
    print(f"start-up (median of {args.reps} fresh processes): python train.py -> first "
          f"training step {results['first_step_s']:.2f} s; import losslab "
          f"{results['import_losslab_s']:.3f} s; import losslab.run (Lightning, torch, "
          f"torchmetrics, Hydra) {results['import_training_stack_s']:.2f} s")
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()

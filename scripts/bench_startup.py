"""Start-up: seconds from launching `python train.py` to its first training step, and the
import time of `losslab`.

Each measurement is a fresh process (median of `--reps`), timed from its launch to a point
inside it, never including the interpreter's exit (tearing down the imported modules takes
another 1-1.5 s here): the first-step time comes from `losslab.callbacks.timing.FirstStepTimer`
(a callback added on the command line, which stops the run after that step); `import losslab`
is `python -c "import losslab"` minus `python -c "pass"` (its exit is trivial). Two references,
measured alongside: the same point in a plain PyTorch script (import torch, build the default
MLP and its Adam optimizer, make a batch: the floor any torch program pays, including
`torch._dynamo`, which torch imports when an optimizer is built), and the moment
`import lightning.pytorch` returns in a script that does only that, minus the same moment in
an empty script (what any Lightning program pays on top of Python's own start).

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


RAW_SCRIPT = """
import json, sys, time
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(40, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                      nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(100, 40), torch.randint(0, 10, (100,))
with open(sys.argv[1], "w") as f:
    json.dump({"first_step_unix": time.time()}, f)
loss = nn.functional.cross_entropy(model(x), y)
loss.backward()
optimizer.step()
"""


IMPORT_SCRIPT = """
import json, sys, time
{imports}
with open(sys.argv[1], "w") as f:
    json.dump({{"first_step_unix": time.time()}}, f)
"""


def script_marker(tmp: Path, script: str) -> float:
    """Seconds from launching `python -c script` to the time the script writes into its marker
    file (as `first_step_unix`); the process's exit is not counted."""
    marker = tmp / "script_marker.json"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.time()
    subprocess.run([sys.executable, "-c", script, str(marker)], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(marker.read_text())["first_step_unix"] - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        first_step(Path(tmp))  # warm the file-system cache and the data cache
        samples: dict[str, list[float]] = {"python": [], "losslab": [], "empty_script": [],
                                           "lightning": [], "first_step": [],
                                           "raw_first_step": []}
        lightning_script = IMPORT_SCRIPT.format(imports="import lightning.pytorch")
        for _ in range(args.reps):
            samples["python"].append(launch(["-c", "pass"]))
            samples["losslab"].append(launch(["-c", "import losslab"]))
            samples["empty_script"].append(
                script_marker(Path(tmp), IMPORT_SCRIPT.format(imports="")))
            samples["lightning"].append(script_marker(Path(tmp), lightning_script))
            samples["first_step"].append(first_step(Path(tmp)))
            samples["raw_first_step"].append(script_marker(Path(tmp), RAW_SCRIPT))
    med = {k: statistics.median(v) for k, v in samples.items()}
    results = {
        "first_step_s": med["first_step"],
        "import_losslab_s": med["losslab"] - med["python"],
        "import_lightning_s": med["lightning"] - med["empty_script"],
        "raw_first_step_s": med["raw_first_step"],
        "python_s": med["python"], "reps": args.reps,
    }
    print(f"start-up (median of {args.reps} fresh processes): python train.py -> first "
          f"training step {results['first_step_s']:.2f} s; import losslab "
          f"{results['import_losslab_s']:.3f} s; references: "
          f"plain PyTorch script -> first step {results['raw_first_step_s']:.2f} s, import "
          f"lightning.pytorch {results['import_lightning_s']:.2f} s")
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()

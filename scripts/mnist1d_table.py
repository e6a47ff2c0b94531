"""The MNIST-1D table: logistic regression, MLP, CNN and GRU, several seeds each, beside the
MNIST-1D paper's test accuracies (Greydanus 2020: 32%, 68%, 94%, 91%).

    python scripts/mnist1d_table.py                    # 4 presets x seeds 0 1 2, one process
    python scripts/mnist1d_table.py --seeds 0 1 2 3 4 --presets gru cnn
    python scripts/mnist1d_table.py --quick            # tiny budgets (a smoke test)

Each run is `python train.py <preset> seed=<s>` (in this process): the seed sets the weights,
the batch order and the train/val split; the test split is the standard 1000 samples. Prints a
markdown table (mean ± std over seeds of the best-checkpoint test accuracy) and writes it,
with every run's metrics, to <out>/table.md and <out>/runs.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PRESETS = {  # key: (model, overrides, paper's test accuracy)
    "linear": ("logistic regression", ["experiment=mnist1d_linear"], 0.32),
    "mlp": ("MLP", [], 0.68),
    "cnn": ("CNN", ["experiment=mnist1d_cnn"], 0.94),
    "gru": ("GRU", ["experiment=mnist1d_gru"], 0.91),
}
QUICK = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null"]


def run_one(out_dir: Path, overrides: list[str]) -> dict[str, float]:
    """Compose the train config as `train.py` would and run it; its metrics."""
    from hydra import compose, initialize_config_module

    from losslab.run import train

    with initialize_config_module("losslab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out_dir}", *QUIET, *overrides])
    return train(cfg)


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}%"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}%"


def table(results: dict[str, list[dict[str, float]]], seeds: list[int]) -> str:
    lines = [f"| model | command | test accuracy, ours (mean ± std, {len(seeds)} seeds) "
             "| paper | fit time per run |", "|---|---|---|---|---|"]
    for key, runs in results.items():
        name, overrides, paper = PRESETS[key]
        accs = [r["test/acc"] for r in runs]
        fit = statistics.mean(r.get("perf/fit_seconds", float("nan")) for r in runs)
        cmd = "`python train.py " + " ".join(overrides) + "`" if overrides else \
            "`python train.py`"
        lines.append(f"| {name} | {cmd.replace(' `', '`')} | **{mean_std(accs)}** "
                     f"| {100 * paper:.0f}% | {fit:.1f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--out", type=Path, default=Path("outputs/mnist1d_table"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets (for tests)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {}
    for key in args.presets:
        for seed in args.seeds:
            overrides = [*PRESETS[key][1], f"seed={seed}", *(QUICK if args.quick else []),
                         *args.overrides]
            metrics = run_one(args.out / key / f"seed{seed}", overrides)
            results.setdefault(key, []).append(metrics)
            print(f"mnist1d_table: {key} seed {seed}: test/acc = {metrics['test/acc']:.4f}",
                  flush=True)
    text = table(results, args.seeds)
    minutes = (time.perf_counter() - start) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + f"\n\n({minutes:.1f} min in all)\n")
    (args.out / "runs.json").write_text(json.dumps(results, indent=2))
    print(text)
    print(f"\n{sum(map(len, results.values()))} runs in {minutes:.1f} min; "
          f"written to {args.out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Report on a sweep folder or on one run folder, after the fact.

Sweep folder (holds Hydra job folders 0/, 1/, ...): summary.csv, summary.md and curves.png, the
same files the end-of-sweep callback writes (useful for a sweep that was killed, or resumed).
Run folder (one run: .hydra/, tensorboard/): learning curves from its TensorBoard events into
<run>/report/ -- loss.png (train loss per step and epoch, val loss), metrics.png (train and val
curve of each metric), grad_norms.png (grad/norm/<layer> per layer and the total, log scale)
and sharpness.png (when the sharpness callback ran).

    python scripts/report.py outputs/multirun/2026-01-31/12-00-00
    python scripts/report.py <sweep folder> --no-curves     # tables only (no TensorBoard read)
    python scripts/report.py outputs/2026-01-31/12-00-00    # one run: curve PNGs
    python scripts/report.py <run folder> --out <folder>    # PNGs elsewhere

Prints summary.md (sweep) or the last values of the curves (run). Exit code 0, or 2 when the
folder holds neither job folders nor TensorBoard events.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losslab.sweeps.summary import write_summary


def is_sweep(folder: Path) -> bool:
    """A multirun folder: some child folder is a Hydra job (has .hydra/overrides.yaml)."""
    return any((p / ".hydra" / "overrides.yaml").is_file() for p in folder.iterdir() if p.is_dir())


def report_run(run_dir: Path, out: Path | None) -> int:
    from losslab.diagnostics.curves import load_scalars, plot_run, summary_lines

    files = plot_run(run_dir, out or run_dir / "report")
    if not files:
        print(f"report: '{run_dir}' holds no job folders and no TensorBoard scalars (a sweep "
              "folder or a run folder written with logger=tensorboard).", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(load_scalars(run_dir))))
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (holds 0/, 1/, ...) or a "
                        "run folder")
    parser.add_argument("--no-curves", action="store_true", help="sweep: skip curves.png")
    parser.add_argument("--out", type=Path, default=None,
                        help="run: folder for the PNGs (default <run>/report)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"report: no folder '{args.sweep_dir}'.", file=sys.stderr)
        return 2
    if not is_sweep(args.sweep_dir):
        return report_run(args.sweep_dir, args.out)
    result = write_summary(args.sweep_dir, curves=not args.no_curves)
    if not result.records:
        print(f"report: '{args.sweep_dir}' holds no job folders (with .hydra/overrides.yaml).",
              file=sys.stderr)
        return 2
    print((args.sweep_dir / "summary.md").read_text())
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

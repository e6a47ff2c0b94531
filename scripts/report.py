"""Summarise a sweep folder after the fact: summary.csv, summary.md and curves.png, the same
files the end-of-sweep callback writes (useful for a sweep that was killed, or resumed).

    python scripts/report.py outputs/multirun/2026-01-31/12-00-00
    python scripts/report.py <sweep folder> --no-curves     # tables only (no TensorBoard read)

Prints summary.md. Exit code 0, or 2 when the folder holds no Hydra job folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losslab.sweeps.summary import write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (holds 0/, 1/, ...)")
    parser.add_argument("--no-curves", action="store_true", help="skip curves.png")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"report: no folder '{args.sweep_dir}'.", file=sys.stderr)
        return 2
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

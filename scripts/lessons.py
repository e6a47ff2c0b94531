"""Run every lesson of the course as an experiment and write lessons/report.md + PNG plots.

    python scripts/lessons.py                      # all 13 lessons, full size (~30 min, 1 core)
    python scripts/lessons.py --quick              # short runs (one seed, few epochs)
    python scripts/lessons.py --only imbalanced,gradcheck
    python scripts/lessons.py --list

Raw run folders go to outputs/lessons/<quick|full>/ (git-ignored); the report and its figures to
--out (default lessons/; quick runs default to outputs/lessons/quick/report/).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from losslab.lessons.registry import Lesson
    from losslab.lessons.report import Done

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, few epochs (CI)")
    p.add_argument("--only", default="", help="comma-separated lesson names or numbers")
    p.add_argument("--out", type=Path, default=None, help="report folder (default lessons/)")
    p.add_argument("--runs", type=Path, default=None, help="raw run folders")
    p.add_argument("--readme", type=Path, default=None,
                   help="also write the README section to this file")
    p.add_argument("--list", action="store_true", help="list the lessons and exit")
    return p.parse_args(argv)


def quiet() -> None:
    """Lightning's info lines and warnings would drown the progress lines."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "losslab",
                 "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def save(runs: Path, done: Done) -> None:
    """Keep a lesson's outcome, so `--only <name>` can redo one lesson of a full report."""
    import pickle

    path = runs / "outcomes" / f"{done.lesson.name}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps((done.outcome, done.seconds, done.error)))


def load(runs: Path, lesson: Lesson) -> Done | None:
    """The saved outcome of a lesson (see `save`), as a Done, or None."""
    import pickle

    from losslab.lessons.report import Done

    path = runs / "outcomes" / f"{lesson.name}.pkl"
    if not path.is_file():
        return None
    outcome, seconds, error = pickle.loads(path.read_bytes())  # our own file (see save)
    return Done(lesson, outcome, seconds, error)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.chdir(ROOT)
    import torch

    from losslab.lessons.registry import Context, all_lessons
    from losslab.lessons.report import Done, readme_section, write_report

    lessons = all_lessons()
    if args.list:
        for lesson in lessons:
            print(f"{lesson.number:>2} {lesson.name:<20} {lesson.title}")
        return 0
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {x.name for x in lessons} - {str(x.number) for x in lessons}
    if unknown:
        print(f"lessons.py: unknown lesson(s) {', '.join(sorted(unknown))}; "
              f"choose from {', '.join(x.name for x in lessons)}", file=sys.stderr)
        return 2
    chosen = [x for x in lessons if not wanted or x.name in wanted or str(x.number) in wanted]
    size = "quick" if args.quick else "full"
    runs = args.runs or ROOT / "outputs" / "lessons" / size
    out = args.out or (ROOT / "lessons" if not args.quick else runs / "report")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    quiet()
    shown = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--readme" in shown:  # where the README section goes is not part of the experiment
        i = shown.index("--readme")
        del shown[i:i + 2]
    cmdline = ("python scripts/lessons.py " + " ".join(shown)).rstrip()
    start = time.perf_counter()
    done: list[Done] = []
    for lesson in chosen:
        print(f"[{lesson.number:>2}] {lesson.name}: {lesson.title}", flush=True)
        ctx = Context(quick=args.quick, out_root=runs, figures=out, lesson=lesson.name,
                      log=sys.stdout)
        t0 = time.perf_counter()
        try:
            outcome = lesson.measure(ctx)
            done.append(Done(lesson, outcome, time.perf_counter() - t0))
            print(f"     -> {outcome.verdict}: {outcome.sentence} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 (one broken lesson must not lose the others)
            traceback.print_exc()
            done.append(Done(lesson, None, time.perf_counter() - t0,
                             f"{type(e).__name__}: {e}"))
        save(runs, done[-1])
    total = time.perf_counter() - start
    kept = []
    for lesson in lessons:  # lessons not run now: their last saved outcome, if any
        if lesson not in chosen and (old := load(runs, lesson)) is not None:
            done.append(old)
            kept.append(lesson.name)
    done.sort(key=lambda d: d.lesson.number)
    rerun = ""
    if kept:  # a merged report: name the whole command, and which lessons were redone
        rerun = f" Re-run afterwards with `{cmdline}`: {', '.join(x.name for x in chosen)}."
        cmdline = "python scripts/lessons.py" + (" --quick" if args.quick else "")
    not_run = [x.name for x in lessons if x not in [d.lesson for d in done]]
    total = max(total, sum(d.seconds for d in done))
    write_report(done, out / "report.md", cmdline, args.quick, total, not_run, rerun)
    if args.readme:
        args.readme.write_text(readme_section(done, cmdline, total, rerun))
    print(f"wrote {out / 'report.md'} in {total:.0f} s")
    return 1 if any(d.outcome is None for d in done) else 0


if __name__ == "__main__":
    sys.exit(main())

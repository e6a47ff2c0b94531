"""The lesson table: each lesson is a claim, a function that measures it, and an Outcome."""

from __future__ import annotations

import io
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from losslab.lessons.runner import RunResult, train_run

SUPPORTED, NOT_SUPPORTED, MIXED = "supported", "not supported", "mixed"


@dataclass
class Context:
    """How big to run (quick or full), where raw runs and figures go."""

    quick: bool
    out_root: Path                 # raw run folders (git-ignored)
    figures: Path                  # PNGs for the report
    log: io.TextIOBase = field(default_factory=lambda: sys.stdout)  # type: ignore[assignment]
    lesson: str = ""

    @property
    def seeds(self) -> list[int]:
        return [1] if self.quick else [1, 2, 3]

    def epochs(self, full: int, quick: int) -> str:
        return f"trainer.max_epochs={quick if self.quick else full}"

    def train(self, overrides: Sequence[str]) -> RunResult:
        return train_run(list(overrides), self.out_root / self.lesson, self.log)

    def figure(self, name: str) -> Path:
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / f"{self.lesson}_{name}.png"


@dataclass
class Outcome:
    """The measurement of one lesson and what it says about the claim."""

    verdict: str                    # supported | not supported | mixed
    sentence: str                   # the honest one-line reading of the numbers
    measured: str                   # the headline numbers (README table)
    tables: list[str] = field(default_factory=list)    # markdown tables / notes
    figures: list[Path] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass
class Lesson:
    number: int
    name: str
    title: str
    claim: str
    measure: Callable[[Context], Outcome]


LESSONS: dict[str, Lesson] = {}


def lesson(number: int, name: str, title: str, claim: str
           ) -> Callable[[Callable[[Context], Outcome]], Callable[[Context], Outcome]]:
    """Register a lesson function under `name`."""
    def wrap(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        LESSONS[name] = Lesson(number, name, title, claim, fn)
        return fn
    return wrap


def all_lessons() -> list[Lesson]:
    """Every lesson, in the course's order."""
    from losslab.lessons import gradients, losses, optimization  # noqa: F401 (registration)

    return sorted(LESSONS.values(), key=lambda x: x.number)


def verdict(checks: Iterable[bool]) -> str:
    """All checks hold: supported; none: not supported; some: mixed."""
    values = list(checks)
    if values and all(values):
        return SUPPORTED
    if not any(values):
        return NOT_SUPPORTED
    return MIXED


def mean(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.fmean(vals) if vals else math.nan


def std(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table: fixed digits, scientific for tiny/huge values, '-' for NaN."""
    if value != value:
        return "–"
    if value == 0:
        return "0"
    if abs(value) < 10 ** -(digits) or abs(value) >= 1e5:
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """'m ± s' over seeds (s = sample std), or just m for one value."""
    vals = [v for v in values if v == v]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return f"{fmt(mean(vals), digits)} ± {fmt(std(vals), digits)}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command(*overrides: str, multirun: bool = False) -> str:
    """The shell command that reproduces a run or sweep."""
    return "python train.py " + ("-m " if multirun else "") + " ".join(overrides)


def held(checks: dict[str, bool]) -> str:
    """'Held: a; b. Did not hold: c.' for named checks."""
    yes = [k for k, v in checks.items() if v]
    no = [k for k, v in checks.items() if not v]
    return f"Held: {'; '.join(yes) or 'none'}. Did not hold: {'; '.join(no) or 'none'}."


def clearly_better(a: Sequence[float], b: Sequence[float], higher: bool = True) -> bool:
    """Is option a better than option b by more than the seed-to-seed noise?

    The difference of the means must exceed the larger of the two sample standard deviations
    (with one seed each: any difference counts)."""
    diff = mean(a) - mean(b)
    if not higher:
        diff = -diff
    return diff == diff and diff > max(std(a), std(b))

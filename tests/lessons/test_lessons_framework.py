"""The lessons machinery without training: verdicts, tables, presets, toy surfaces, statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from losslab.lessons import toy
from losslab.lessons.registry import (
    MIXED,
    NOT_SUPPORTED,
    SUPPORTED,
    Outcome,
    all_lessons,
    clearly_better,
    fmt,
    md_table,
    mean_std,
    verdict,
)
from losslab.lessons.report import Done, readme_section, write_report
from losslab.lessons.runner import compose, run_dir_name
from losslab.lessons.stats import (
    binary_recall_precision,
    distinct_rows,
    first_reach,
    gradient_variance,
    sparsity,
)

CONF = Path(__file__).resolve().parents[2] / "src" / "losslab" / "conf" / "experiment"


def test_thirteen_lessons_in_order() -> None:
    lessons = all_lessons()
    assert [x.number for x in lessons] == list(range(1, 14))
    assert len({x.name for x in lessons}) == 13
    assert all(x.claim and x.title for x in lessons)


def test_verdict_from_checks() -> None:
    assert verdict([True, True]) == SUPPORTED
    assert verdict([False, False]) == NOT_SUPPORTED
    assert verdict([True, False]) == MIXED
    assert verdict([]) == NOT_SUPPORTED


def test_clearly_better_needs_more_than_seed_noise() -> None:
    assert clearly_better([0.9, 0.91, 0.92], [0.5, 0.51, 0.52])
    assert not clearly_better([0.60, 0.70, 0.80], [0.55, 0.65, 0.75])   # within one std
    assert clearly_better([0.1], [0.2], higher=False)                   # one seed: any gap
    assert not clearly_better([float("nan")], [0.2])


def test_formatting() -> None:
    assert fmt(float("nan")) == "–"
    assert fmt(0.12345) == "0.123"
    assert fmt(1e-9) == "1.00e-09"
    assert mean_std([1.0, 3.0]) == "2.000 ± 1.414"
    assert md_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert "=" not in run_dir_name(["experiment=lesson_imbalanced", "loss.pos_weight=19"])


@pytest.mark.parametrize("path", sorted(CONF.glob("lesson_*.yaml")), ids=lambda p: p.stem)
def test_lesson_presets_compose_and_state_their_claim(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# @package _global_\n")
    assert "Claim" in text.splitlines()[1] or "Claim" in text.splitlines()[2]
    cfg = compose([f"experiment={path.stem}"], tmp_path / "run")
    assert "lesson" in list(cfg.tags)


def test_binary_recall_precision() -> None:
    logits = torch.tensor([3.0, -3.0, 3.0, -3.0])
    y = torch.tensor([1, 1, 0, 0])
    recall, precision, f1 = binary_recall_precision(logits, y)
    assert (recall, precision, f1) == (0.5, 0.5, 0.5)


def test_sparsity_and_distinct_rows() -> None:
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 0] = 1.0
    assert sparsity(layer) == pytest.approx(11 / 12)
    assert distinct_rows(layer.weight) == 2
    assert distinct_rows(torch.zeros(5, 4)) == 1


def test_gradient_variance_falls_like_one_over_batch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    x, y = torch.randn(4000, 5), torch.randn(4000, 1)
    mse = torch.nn.MSELoss(reduction="none")
    small, _ = gradient_variance(model, mse, x, y, 8, batches=200)
    large, _ = gradient_variance(model, mse, x, y, 128, batches=200)
    assert 8 < small / large < 32   # 16 in expectation


def test_first_reach() -> None:
    pts = [(0, 0.1), (1, 0.4), (2, 0.6)]
    assert first_reach(pts, 0.5) == 2
    assert first_reach(pts, 0.9) is None
    assert first_reach(pts, 0.2, above=False) == 0


def test_toy_surfaces() -> None:
    saddle, rosen = toy.surfaces(quick=True)
    assert float(saddle.fn(torch.tensor(0.0), torch.tensor(1.0))) == saddle.minimum
    assert float(rosen.fn(torch.tensor(1.0), torch.tensor(1.0))) == rosen.minimum
    path = toy.trajectory(saddle, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    assert path.shape[1] == 3 and path[-1, 2] < path[0, 2]
    assert toy.steps_to(path, saddle.minimum + 1e-3) is not None


def test_report_and_readme(tmp_path: Path) -> None:
    lesson = all_lessons()[0]
    out = Outcome(SUPPORTED, "It held.", "x 1.0", ["| a |\n|---|\n| 1 |"], [tmp_path / "f.png"],
                  ["python train.py experiment=lesson_robust_regression"])
    done = [Done(lesson, out, 3.0), Done(all_lessons()[1], None, 1.0, "ValueError: boom")]
    text = write_report(done, tmp_path / "report.md", "python scripts/lessons.py", True, 4.0,
                        ["gradcheck"])
    assert "**supported**" in text and "ValueError: boom" in text and "gradcheck" in text
    assert "![f](f.png)" in text
    section = readme_section(done, "python scripts/lessons.py", 4.0)
    assert section.startswith("## What the lessons show")
    assert "| claim | experiment | measured | supported? |" in section

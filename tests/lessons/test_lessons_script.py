"""scripts/lessons.py end to end: --list, a bad --only, and a --quick subset through the real
framework (quantile regression trains; gradcheck and the 2-D surfaces call the library)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lessons.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=300)


def test_list_and_unknown_lesson() -> None:
    listed = run("--list")
    assert listed.returncode == 0
    assert len(listed.stdout.strip().splitlines()) == 13
    bad = run("--only", "nonsense")
    assert bad.returncode == 2
    assert "unknown lesson" in bad.stderr


def test_quick_subset_writes_report(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "report"
    readme = tmp_path / "readme.md"
    done = run("--quick", "--only", "quantile_regression,gradcheck,13", "--runs", str(runs),
               "--out", str(out), "--readme", str(readme))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "report.md").read_text()
    for name in ("quantile_regression", "gradcheck", "saddle_plateau"):
        assert f". {name}" in report
    assert report.count("*Verdict:*") == 3
    assert "**Not run:**" in report and "robust_regression" in report
    assert (out / "quantile_regression_coverage.png").is_file()
    assert (out / "saddle_plateau_saddle.png").is_file()
    assert (runs / "quantile_regression").is_dir()       # the real train(cfg) run folder
    assert any((runs / "quantile_regression").glob("*/metrics.json"))
    assert readme.read_text().startswith("## What the lessons show")
    # --only redoes one lesson and keeps the others' saved outcomes
    again = run("--quick", "--only", "gradcheck", "--runs", str(runs), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    merged = (out / "report.md").read_text()
    assert merged.count("*Verdict:*") == 3
    assert "Re-run afterwards with `python scripts/lessons.py --quick --only gradcheck" in merged

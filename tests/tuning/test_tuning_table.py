"""scripts/mnist1d_table.py on tiny budgets: every preset builds, trains and is tabulated."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_table_script_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mnist1d_table",
                                                  ROOT / "scripts" / "mnist1d_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--seeds", "0", "1", "--out", str(tmp_path),
                        f"paths.data_dir={ROOT / 'data'}", "logger=csv"]) == 0
    table = (tmp_path / "table.md").read_text()
    for name, paper in [("logistic regression", "32%"), ("MLP", "68%"), ("CNN", "94%"),
                        ("GRU", "91%")]:
        line = next(row for row in table.splitlines() if row.startswith(f"| {name} |"))
        assert paper in line and "±" in line
    assert "2 seeds" in capsys.readouterr().out

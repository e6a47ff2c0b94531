"""`make bench`: run the benchmark scripts one after another and print their tables.

Benchmarks so far: loss forward+backward vs torch built-ins (bench_losses.py) and the overhead of
the gradient-monitoring callbacks (bench_grad_overhead.py). The framework-overhead, start-up and
time-to-accuracy benchmarks of the performance issue are not written yet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ["bench_losses.py", "--threads", "1", "--skip-slow"],
    ["bench_grad_overhead.py", "--threads", "1"],
]


def main() -> int:
    status = 0
    for script, *args in BENCHMARKS:
        print(f"\n### {script} {' '.join(args)}\n", flush=True)
        status |= subprocess.call([sys.executable, str(HERE / script), *args, *sys.argv[1:]])
    return status


if __name__ == "__main__":
    sys.exit(main())

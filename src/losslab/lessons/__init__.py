"""Lessons as experiments: every claim of the course notes, runnable and measured (issue #12).

registry.py     the Lesson / Outcome types, the Scale (quick or full) and the LESSONS table
runner.py       compose the real Hydra config, run `losslab.run.train`, read back its outputs
timing.py       a callback that records the wall time and step of every training epoch
stats.py        small helpers: means over seeds, predictions of a checkpoint, gradient variance
plots.py        the lessons' figures (PNG)
toy.py          2-D surfaces (saddle, Rosenbrock) and torch.optim trajectories on them
losses.py       lessons 1-4 and 9 (regression robustness, quantiles, imbalance, calibration, L1/L2)
gradients.py    lessons 5, 6 and 12 (init/activation, exploding + clipping, gradient checks)
optimization.py lessons 7, 8, 10, 11 and 13 (optimizers, lr/batch size, curriculum, multi-task)
report.py       lessons/report.md and the README section
"""

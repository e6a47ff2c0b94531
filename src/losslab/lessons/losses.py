"""Lessons 1-4 and 9: what a loss (or penalty) does to the model it trains."""

from __future__ import annotations

import torch

from losslab.lessons import plots
from losslab.lessons.registry import (
    Context,
    Outcome,
    clearly_better,
    command,
    fmt,
    lesson,
    md_table,
    mean,
    mean_std,
    std,
    verdict,
)
from losslab.lessons.stats import binary_recall_precision, predictions, sparsity


def _clean_test_targets(result) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the test split without the outlier shifts: the same data set built with
    outlier_fraction=0 (same seed, so the same x, noise and split)."""
    from omegaconf import OmegaConf

    from losslab.builders import build
    from losslab.data import DATASETS

    spec = OmegaConf.to_container(result.cfg.data, resolve=True)
    assert isinstance(spec, dict)
    spec["outlier_fraction"] = 0.0
    dm = build(DATASETS, spec)
    dm.setup("test")
    return dm.splits["test"]


@lesson(1, "robust_regression", "MSE vs MAE vs Huber with outliers",
        "MSE is sensitive to outliers; MAE and Huber are robust (test error on clean targets "
        "with 10% outliers in the data); Huber's delta trades robustness for efficiency.")
def robust_regression(ctx: Context) -> Outcome:
    exp = "experiment=lesson_robust_regression"
    epochs = ctx.epochs(30, 8)
    losses = {"mse": ["loss=mse"], "mae": ["loss=mae"], "huber (δ=1)": ["loss=huber"]}
    deltas = [0.1, 0.3, 1.0, 3.0, 10.0] if not ctx.quick else [0.3, 3.0]
    clean: dict[str, list[float]] = {}
    noisy: dict[str, list[float]] = {}
    for label, ov in losses.items():
        for seed in ctx.seeds:
            r = ctx.train([exp, *ov, f"seed={seed}", epochs])
            x, y, out = predictions(r)
            xc, yc = _clean_test_targets(r)
            assert torch.equal(x, xc), "clean and noisy test inputs differ"
            clean.setdefault(label, []).append(float((out.reshape(-1) - yc).abs().mean()))
            noisy.setdefault(label, []).append(r.get("test/mae"))
    sweep: dict[float, float] = {}
    for d in deltas:
        r = ctx.train([exp, "loss=huber", f"loss.delta={d}", f"seed={ctx.seeds[0]}", epochs])
        _, _, out = predictions(r)
        _, yc = _clean_test_targets(r)
        sweep[d] = float((out.reshape(-1) - yc).abs().mean())
    m = {k: mean(v) for k, v in clean.items()}
    table = md_table(["loss", "test MAE vs clean targets", "test MAE vs noisy targets"],
                     [[k, mean_std(clean[k]), mean_std(noisy[k])] for k in losses])
    table2 = md_table(["Huber δ", *[fmt(d, 1) for d in deltas]],
                      [["clean test MAE (seed 1)", *[fmt(sweep[d]) for d in deltas]]])
    fig = plots.bars(ctx.figure("clean_mae"), list(losses), [m[k] for k in losses],
                     "Lesson 1: test MAE on clean targets (10% outliers in data)", "MAE",
                     [std(clean[k]) for k in losses])
    fig2 = plots.curves(ctx.figure("huber_delta"), {"huber": (deltas, [sweep[d] for d in deltas])},
                        "Lesson 1: Huber δ sweep", "δ", "clean test MAE", logx=True)
    robust = [clearly_better(clean["mae"], clean["mse"], higher=False),
              clearly_better(clean["huber (δ=1)"], clean["mse"], higher=False)]
    small, large = sweep[min(deltas)], sweep[max(deltas)]
    checks = robust + [small < large]
    sentence = (f"MSE's clean test MAE is {fmt(m['mse'])}, MAE's {fmt(m['mae'])}, Huber's "
                f"{fmt(m['huber (δ=1)'])}; in the δ sweep the smallest δ gives {fmt(small)} and "
                f"the largest {fmt(large)}.")
    return Outcome(verdict(checks), sentence,
                   f"clean MAE mse {fmt(m['mse'])}, mae {fmt(m['mae'])}, "
                   f"huber {fmt(m['huber (δ=1)'])}",
                   [table, table2], [fig, fig2],
                   [command(exp, "loss=mse,mae,huber", "seed=1,2,3", multirun=True),
                    command(exp, "loss=huber", "loss.delta=" + ",".join(map(str, deltas)),
                            multirun=True)])


@lesson(2, "quantile_regression", "Quantile regression and interval coverage",
        "Minimising the pinball loss gives the τ-th conditional quantile, so the 0.1 and 0.9 "
        "outputs form an 80% prediction interval.")
def quantile_regression(ctx: Context) -> Outcome:
    exp = "experiment=lesson_quantile_regression"
    below: dict[float, list[float]] = {0.1: [], 0.5: [], 0.9: []}
    coverage, crossing = [], []
    for seed in ctx.seeds:
        r = ctx.train([exp, f"seed={seed}", ctx.epochs(40, 10)])
        _, y, out = predictions(r)
        for j, tau in enumerate(below):
            below[tau].append(float((y <= out[:, j]).float().mean()))
        coverage.append(float(((y >= out[:, 0]) & (y <= out[:, 2])).float().mean()))
        crossing.append(float(((out[:, 0] > out[:, 1]) | (out[:, 1] > out[:, 2])).float().mean()))
    rows = [[f"q{tau}", fmt(tau, 2), mean_std(v)] for tau, v in below.items()]
    rows.append(["[q0.1, q0.9]", "0.80 (coverage)", mean_std(coverage)])
    rows.append(["crossing quantiles", "0", mean_std(crossing)])
    table = md_table(["output", "nominal", "measured on test"], rows)
    cov = mean(coverage)
    checks = [abs(cov - 0.8) <= 0.05] + [abs(mean(v) - t) <= 0.05 for t, v in below.items()]
    fig = plots.bars(ctx.figure("coverage"), ["P(y≤q0.1)", "P(y≤q0.5)", "P(y≤q0.9)", "coverage"],
                     [mean(below[0.1]), mean(below[0.5]), mean(below[0.9]), cov],
                     "Lesson 2: empirical quantile levels (nominal 0.1/0.5/0.9/0.8)", "fraction")
    sentence = (f"The 80% interval covers {fmt(cov)} of the test targets; the fractions below "
                f"the three quantile outputs are "
                f"{', '.join(fmt(mean(v)) for v in below.values())}.")
    return Outcome(verdict(checks), sentence, f"80% interval coverage {fmt(cov)}", [table], [fig],
                   [command(exp, "seed=1,2,3", multirun=True)])


@lesson(3, "imbalanced", "Focal vs CE vs class-weighted CE on 5% positives",
        "On an imbalanced binary set, focal loss and class-weighted cross-entropy beat plain "
        "cross-entropy on the minority class (F1, recall) and AUROC.")
def imbalanced(ctx: Context) -> Outcome:
    exp = "experiment=lesson_imbalanced"
    options = {"bce (plain CE)": ["loss=bce"], "focal γ=2 α=0.25": ["loss=focal"],
               "focal γ=2 α=0.75": ["loss=focal", "loss.alpha=0.75"],
               "bce pos_weight=19": ["loss=bce", "loss.pos_weight=19"]}
    res: dict[str, dict[str, list[float]]] = {}
    for label, ov in options.items():
        for seed in ctx.seeds:
            r = ctx.train([exp, *ov, f"seed={seed}", ctx.epochs(30, 8)])
            _, y, out = predictions(r)
            rec, prec, f1 = binary_recall_precision(out, y)
            d = res.setdefault(label, {})
            for k, v in (("auroc", r.get("test/auroc")), ("f1", f1), ("recall", rec),
                         ("precision", prec), ("acc", r.get("test/acc"))):
                d.setdefault(k, []).append(v)
    keys = ["auroc", "f1", "recall", "precision", "acc"]
    table = md_table(["loss", "test AUROC", "minority F1", "minority recall", "precision",
                      "accuracy"], [[k, *[mean_std(res[k][m]) for m in keys]] for k in options])
    m = {k: {x: mean(v) for x, v in d.items()} for k, d in res.items()}
    base = m["bce (plain CE)"]
    fig = plots.bars(ctx.figure("minority"), list(options), [m[k]["recall"] for k in options],
                     "Lesson 3: minority-class recall (threshold 0.5)", "recall",
                     [std(res[k]["recall"]) for k in options])
    focal, weighted = m["focal γ=2 α=0.25"], m["bce pos_weight=19"]
    raw_ce, raw_focal = res["bce (plain CE)"], res["focal γ=2 α=0.25"]
    raw_w = res["bce pos_weight=19"]
    checks = [clearly_better(raw_focal["f1"], raw_ce["f1"]),
              clearly_better(raw_w["f1"], raw_ce["f1"]),
              clearly_better(raw_focal["recall"], raw_ce["recall"]),
              clearly_better(raw_w["recall"], raw_ce["recall"]),
              clearly_better(raw_focal["auroc"], raw_ce["auroc"])]
    sentence = (f"Minority F1: CE {fmt(base['f1'])}, focal (α=0.25) {fmt(focal['f1'])}, "
                f"focal (α=0.75) {fmt(m['focal γ=2 α=0.75']['f1'])}, class-weighted "
                f"{fmt(weighted['f1'])}; recall CE {fmt(base['recall'])} vs class-weighted "
                f"{fmt(weighted['recall'])}, focal {fmt(focal['recall'])}; AUROC CE "
                f"{fmt(base['auroc'])} vs focal {fmt(focal['auroc'])}, class-weighted "
                f"{fmt(weighted['auroc'])}. Checks (a difference must exceed the seed std): focal "
                f"and class-weighted CE beat CE on F1 and recall, focal on AUROC: "
                f"{', '.join('yes' if c else 'no' for c in checks)}.")
    return Outcome(verdict(checks), sentence,
                   f"minority F1 CE {fmt(base['f1'])} / focal {fmt(focal['f1'])} / weighted "
                   f"{fmt(weighted['f1'])}; recall {fmt(base['recall'])} / "
                   f"{fmt(focal['recall'])} / {fmt(weighted['recall'])}", [table], [fig],
                   [command(exp, "loss=bce,focal", "seed=1,2,3", multirun=True),
                    command(exp, "loss=bce", "loss.pos_weight=19", "seed=1,2,3", multirun=True),
                    command(exp, "loss=focal", "loss.alpha=0.75", "seed=1,2,3", multirun=True)])


@lesson(4, "calibration", "Label smoothing and confidence penalty vs CE",
        "Label smoothing and a confidence penalty prevent over-confident predictions (lower "
        "calibration error) and help generalisation (accuracy not worse).")
def calibration(ctx: Context) -> Outcome:
    exp = "experiment=lesson_calibration"
    options = {"ce": [], "label smoothing 0.1": ["loss.label_smoothing=0.1"],
               "confidence penalty 0.1": ["loss.confidence_penalty=0.1"]}
    ece: dict[str, list[float]] = {}
    acc: dict[str, list[float]] = {}
    for label, ov in options.items():
        for seed in ctx.seeds:
            r = ctx.train([exp, *ov, f"seed={seed}", ctx.epochs(30, 6)])
            ece.setdefault(label, []).append(r.get("test/ece"))
            acc.setdefault(label, []).append(r.get("test/acc"))
    table = md_table(["loss", "test ECE", "test accuracy"],
                     [[k, mean_std(ece[k]), mean_std(acc[k])] for k in options])
    me = {k: mean(v) for k, v in ece.items()}
    ma = {k: mean(v) for k, v in acc.items()}
    fig = plots.bars(ctx.figure("ece"), list(options), [me[k] for k in options],
                     "Lesson 4: expected calibration error (15 bins)", "test ECE",
                     [std(ece[k]) for k in options])
    ls, cp = "label smoothing 0.1", "confidence penalty 0.1"
    checks = [clearly_better(ece[ls], ece["ce"], higher=False),
              clearly_better(ece[cp], ece["ce"], higher=False),
              ma[ls] >= ma["ce"] - 0.01, ma[cp] >= ma["ce"] - 0.01]
    sentence = (f"ECE: CE {fmt(me['ce'])}, label smoothing {fmt(me[ls])}, confidence penalty "
                f"{fmt(me[cp])}; accuracy {fmt(ma['ce'])} / {fmt(ma[ls])} / {fmt(ma[cp])}.")
    return Outcome(verdict(checks), sentence,
                   f"ECE {fmt(me['ce'])} / {fmt(me[ls])} / {fmt(me[cp])}; acc "
                   f"{fmt(ma['ce'])} / {fmt(ma[ls])} / {fmt(ma[cp])}", [table], [fig],
                   [command(exp, "loss.label_smoothing=0,0.1", "seed=1,2,3", multirun=True),
                    command(exp, "loss.confidence_penalty=0.1", "seed=1,2,3", multirun=True)])


@lesson(9, "regularization", "L1 vs L2 regularisation",
        "An L1 penalty promotes sparsity (weights at ~0); L2 only shrinks weights and improves "
        "generalisation.")
def regularization(ctx: Context) -> Outcome:
    exp = "experiment=lesson_regularization"
    options = {"none": [], "L1 1e-4": ["task.regularization.l1=1e-4"],
               "L1 1e-3": ["task.regularization.l1=1e-3"],
               "L2 1e-4": ["task.regularization.l2=1e-4"],
               "L2 1e-3": ["task.regularization.l2=1e-3"]}
    sp: dict[str, list[float]] = {}
    acc: dict[str, list[float]] = {}
    for label, ov in options.items():
        for seed in ctx.seeds:
            r = ctx.train([exp, *ov, f"seed={seed}", ctx.epochs(40, 10)])
            task, _ = r.load()
            sp.setdefault(label, []).append(sparsity(task.model))
            acc.setdefault(label, []).append(r.get("test/acc"))
    table = md_table(["penalty", "weights with abs(w) < 1e-3", "test accuracy"],
                     [[k, mean_std(sp[k]), mean_std(acc[k])] for k in options])
    ms = {k: mean(v) for k, v in sp.items()}
    ma = {k: mean(v) for k, v in acc.items()}
    fig = plots.bars(ctx.figure("sparsity"), list(options), [ms[k] for k in options],
                     "Lesson 9: fraction of weights with |w| < 1e-3", "fraction",
                     [std(sp[k]) for k in options])
    l1_sparser = ms["L1 1e-3"] > max(ms["none"], ms["L2 1e-3"]) * 2
    l2_helps = any(clearly_better(acc[k], acc["none"]) for k in ("L2 1e-4", "L2 1e-3"))
    sentence = (f"Sparsity: none {fmt(ms['none'])}, L1 1e-3 {fmt(ms['L1 1e-3'])}, L2 1e-3 "
                f"{fmt(ms['L2 1e-3'])}; accuracy none {fmt(ma['none'])}, best L2 "
                f"{fmt(max(ma['L2 1e-4'], ma['L2 1e-3']))}, best L1 "
                f"{fmt(max(ma['L1 1e-4'], ma['L1 1e-3']))}; L2's accuracy gain "
                f"{'exceeds' if l2_helps else 'is within'} the seed-to-seed std.")
    return Outcome(verdict([l1_sparser, l2_helps]), sentence,
                   f"sparsity none {fmt(ms['none'])} / L1 {fmt(ms['L1 1e-3'])} / L2 "
                   f"{fmt(ms['L2 1e-3'])}; acc {fmt(ma['none'])} / {fmt(ma['L1 1e-3'])} / "
                   f"{fmt(ma['L2 1e-3'])}", [table], [fig],
                   [command(exp, "task.regularization.l1=0,1e-4,1e-3", multirun=True),
                    command(exp, "task.regularization.l2=1e-4,1e-3", multirun=True)])

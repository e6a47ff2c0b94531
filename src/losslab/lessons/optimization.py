"""Lessons 7, 8, 10, 11 and 13: optimizers, learning rate and batch size, curriculum,
multi-task weighting, saddle points and plateaus."""

from __future__ import annotations

import math

import numpy as np

from losslab.lessons import plots, toy
from losslab.lessons.registry import (
    Context,
    Outcome,
    clearly_better,
    command,
    fmt,
    held,
    lesson,
    md_table,
    mean,
    mean_std,
    verdict,
)
from losslab.lessons.runner import RunResult
from losslab.lessons.stats import first_reach, gradient_variance


def _to_target(r: RunResult, target: float, metric: str = "val/acc", above: bool = True
               ) -> tuple[float, float, float]:
    """(epochs, steps, seconds) until `metric` first reaches `target` (NaN when never)."""
    epoch = first_reach(r.epoch_curve(metric), target, above)
    if epoch is None:
        return math.nan, math.nan, math.nan
    rows = {int(t["epoch"]): t for t in r.timing()}
    t = rows.get(epoch)
    if t is None:
        return float(epoch + 1), math.nan, math.nan
    return float(epoch + 1), float(t["step"]), float(t["seconds"])


def _nan_max(values: list[float], fill: float) -> float:
    """Mean with runs that never reached the target counted as `fill` (the run's length)."""
    return mean([fill if v != v else v for v in values])


@lesson(7, "optimizers", "SGD vs momentum vs Nesterov vs RMSprop vs Adam vs AdamW; L-BFGS",
        "Momentum/Nesterov speed up SGD; adaptive methods (RMSprop, Adam, AdamW) reach a target "
        "accuracy sooner than plain SGD; second-order/quasi-Newton methods need far fewer steps "
        "on a small smooth problem.")
def optimizers(ctx: Context) -> Outcome:
    exp, target = "experiment=lesson_optimizers", 0.5
    names = ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"]
    epochs = 20 if not ctx.quick else 4
    rows, steps, secs, curves, final = [], {}, {}, {}, {}
    for name in names:
        for seed in ctx.seeds:
            r = ctx.train([exp, f"optim={name}", f"seed={seed}", ctx.epochs(20, 4)])
            e, s, t = _to_target(r, target)
            steps.setdefault(name, []).append(s)
            secs.setdefault(name, []).append(t)
            final.setdefault(name, []).append(r.get("test/acc"))
            if seed == ctx.seeds[0]:
                c = r.epoch_curve("train/loss_epoch")
                curves[name] = ([x + 1 for x, _ in c], [v for _, v in c])
        total = r.get("perf/train_steps")
        reached = sum(v == v for v in steps[name])
        rows.append([name, f"{reached}/{len(steps[name])}", fmt(mean(steps[name]), 0),
                     fmt(mean(secs[name]), 2), mean_std(final[name])])
    table = md_table(["optimizer (preset lr)", f"runs reaching val/acc {target}",
                      "steps to target", "seconds to target", "final test accuracy"], rows)
    fig = plots.curves(ctx.figure("loss_curves"), curves,
                       "Lesson 7: training loss per epoch (MNIST-1D MLP)", "epoch",
                       "train loss", logy=True)
    ms = {k: _nan_max(v, total * 2) for k, v in steps.items()}
    second, rows2, curves2 = {}, [], {}
    for name in ("sgd", "adam", "lbfgs", "newton_cg"):
        r = ctx.train(["experiment=lesson_second_order", f"optim={name}", ctx.epochs(30, 10)])
        c = r.epoch_curve("train/loss_epoch")
        hit = first_reach(c, 0.1, above=False)
        second[name] = (hit + 1) if hit is not None else math.nan
        curves2[name] = ([x + 1 for x, _ in c], [v for _, v in c])
        per_step = r.get("perf/fit_seconds") / max(r.get("perf/train_steps"), 1)
        rows2.append([name, fmt(second[name], 0), fmt(c[-1][1] if c else math.nan),
                      fmt(per_step * 1000, 1), fmt(r.get("test/acc"))])
    table2 = md_table(["optimizer (full batch)", "steps to train loss ≤ 0.1", "final train loss",
                       "ms per step", "test accuracy"], rows2)
    fig2 = plots.curves(ctx.figure("second_order"), curves2,
                        "Lesson 7: logistic regression on breast_cancer, full batch", "step",
                        "train loss", logy=True)
    big = float(epochs * 1000)
    s2 = {k: (big if v != v else v) for k, v in second.items()}
    checks = {"momentum/nesterov faster than sgd": max(ms["momentum"], ms["nesterov"]) < ms["sgd"],
              "adaptive faster than sgd": max(ms["rmsprop"], ms["adam"], ms["adamw"]) < ms["sgd"],
              "L-BFGS / Newton-CG fewer steps": min(s2["lbfgs"], s2["newton_cg"])
              < min(s2["sgd"], s2["adam"])}
    sentence = ("Mean steps to val/acc 0.5 (runs that never reach it count as twice the run): "
                + ", ".join(f"{k} {fmt(ms[k], 0)}" for k in names)
                + "; full-batch steps to loss 0.1: "
                + ", ".join(f"{k} {fmt(v, 0)}" for k, v in second.items())
                + ". " + held(checks))
    return Outcome(verdict(checks.values()), sentence,
                   "steps to 0.5: " + ", ".join(f"{k} {fmt(ms[k], 0)}" for k in names)
                   + "; full-batch steps to loss 0.1: "
                   + ", ".join(f"{k} {fmt(v, 0) if v == v else 'not reached'}"
                               for k, v in second.items()), [table, table2], [fig, fig2],
                   [command(exp, "optim=sgd,momentum,nesterov,rmsprop,adam,adamw", "seed=1,2,3",
                            multirun=True),
                    command("experiment=lesson_second_order", "optim=sgd,adam,lbfgs,newton_cg",
                            multirun=True)])


@lesson(8, "lr_batch", "Learning rate too low/right/too high; batch size 8/32/128/512",
        "Too low a learning rate converges slowly, too high overshoots or diverges; larger "
        "batches give less noisy gradients (variance ∝ 1/B) and need fewer steps, smaller "
        "batches fewer epochs.")
def lr_batch(ctx: Context) -> Outcome:
    exp, target = "experiment=lesson_lr_batch", 0.45
    lrs = [0.001, 0.05, 1.0, 10.0]
    lr_rows, lr_curves, lr_final = [], {}, {}
    for lr in lrs:
        r = ctx.train([exp, "optim=sgd", f"optim.lr={lr}", ctx.epochs(15, 3)])
        c = r.epoch_curve("train/loss_epoch")
        lr_curves[f"lr={lr}"] = ([x + 1 for x, _ in c], [min(v, 1e3) for _, v in c])
        last = c[-1][1] if c else math.nan
        lr_final[lr] = last
        s = r.grad_health().get("summary", {})
        lr_rows.append([lr, fmt(last), fmt(r.get("val/acc_best")),
                        s.get("events", {}).get("non_finite", 0), s.get("stopped", False)])
    table = md_table(["SGD lr", "final train loss", "best val acc", "non-finite events",
                      "stopped"], lr_rows)
    fig = plots.curves(ctx.figure("lr_curves"), lr_curves, "Lesson 8: SGD learning rates",
                       "epoch", "train loss", logy=True)
    sizes = [8, 32, 128, 512]
    b_rows, b_curves, b_steps, b_epochs, b_total, noise = [], {}, {}, {}, {}, {}
    reference = None
    for b in sizes:
        r = ctx.train([exp, f"data.batch_size={b}", ctx.epochs(15, 3)])
        e, s, t = _to_target(r, target)
        b_steps[b], b_epochs[b], b_total[b] = s, e, r.get("perf/train_steps")
        c = r.epoch_curve("val/acc")
        b_curves[f"B={b}"] = ([x + 1 for x, _ in c], [v for _, v in c])
        b_rows.append([b, fmt(e, 0), fmt(s, 0), fmt(t, 2), fmt(r.get("test/acc")),
                       fmt(r.get("perf/fit_seconds"), 1)])
        if b == 128:
            reference = r
    assert reference is not None
    task, dm = reference.load()
    x, y = dm.splits["train"]
    for b in sizes:
        noise[b], _ = gradient_variance(task.model, task.loss_fn, x, y, b,
                                        batches=16 if ctx.quick else 64)
    slope = float(np.polyfit(np.log(sizes), np.log([noise[b] for b in sizes]), 1)[0])
    table2 = md_table(["batch size", f"epochs to val/acc {target}", "steps to target",
                       "seconds to target", "test accuracy", "fit seconds"], b_rows)
    table3 = md_table(["batch size", "E‖g_B − g‖² (trained B=128 model)", "B × variance"],
                      [[b, fmt(noise[b], 4), fmt(b * noise[b], 3)] for b in sizes])
    fig2 = plots.curves(ctx.figure("batch_curves"), b_curves, "Lesson 8: val accuracy by batch",
                        "epoch", "val/acc")
    fig3 = plots.curves(ctx.figure("grad_noise"), {"measured": (sizes, [noise[b] for b in sizes])},
                        f"Lesson 8: gradient variance vs batch size (slope {slope:.2f})",
                        "batch size", "E‖g_B − g‖²", logy=True, logx=True)
    reached = [b for b in sizes if b_steps[b] == b_steps[b]]
    steps_fall = len(reached) >= 2 and all(
        b_steps[a] > b_steps[c] for a, c in zip(reached, reached[1:], strict=False))
    epochs_rise = len(reached) >= 2 and b_epochs[reached[0]] <= b_epochs[reached[-1]]
    checks = {"too low is slower": lr_final[0.001] > lr_final[0.05],
              "too high overshoots/diverges": not (lr_final[10.0] <= lr_final[0.05]),
              "variance ∝ 1/B": -1.25 <= slope <= -0.75,
              "larger batches: fewer steps": steps_fall,
              "smaller batches: fewer epochs": epochs_rise}
    missed = [f"B={b} ({fmt(b_total[b], 0)} steps)" for b in sizes if b not in reached]
    sentence = (f"Final SGD train loss at lr {', '.join(map(str, lrs))}: "
                f"{', '.join(fmt(lr_final[v]) for v in lrs)}; gradient variance slope vs B "
                f"{slope:.2f} (ideal −1); steps to val/acc {target}: "
                + ", ".join(f"B={b} {fmt(b_steps[b], 0)}" for b in sizes)
                + (f" (never reached within the run: {', '.join(missed)}; the step checks use "
                   "the batch sizes that reached it)" if missed else "")
                + ". " + held(checks))
    return Outcome(verdict(checks.values()), sentence,
                   f"loss lr=1e-3 {fmt(lr_final[0.001])}, 0.05 {fmt(lr_final[0.05])}, 10 "
                   f"{fmt(lr_final[10.0])}; variance slope {slope:.2f}; steps "
                   + "/".join(fmt(b_steps[b], 0) for b in sizes),
                   [table, table2, table3], [fig, fig2, fig3],
                   [command(exp, "optim=sgd", "optim.lr=0.001,0.05,1.0,10.0", multirun=True),
                    command(exp, "data.batch_size=8,32,128,512", multirun=True)])


@lesson(10, "curriculum", "Curriculum under label noise",
        "Weighting samples by difficulty (self-paced, pacing, SuperLoss) improves generalisation "
        "when 40% of the training labels are wrong.")
def curriculum(ctx: Context) -> Outcome:
    exp = "experiment=curriculum_label_noise"
    names = ["none", "self_paced_hard", "pacing", "superloss"]
    acc, share = {}, {}
    for name in names:
        for seed in ctx.seeds:
            r = ctx.train([exp, f"curriculum={name}", f"seed={seed}", ctx.epochs(30, 4)])
            acc.setdefault(name, []).append(r.get("test/acc"))
            share.setdefault(name, []).append(r.get("curriculum/noisy_weight_share"))
    m = {k: mean(v) for k, v in acc.items()}
    table = md_table(["curriculum", "test accuracy",
                      "weight share on flipped labels, last logged step (none: 0.40 by "
                      "construction, not logged)"],
                     [[k, mean_std(acc[k]), mean_std(share[k], 2)] for k in names])
    fig = plots.bars(ctx.figure("accuracy"), names, [m[k] for k in names],
                     "Lesson 10: test accuracy, 40% label noise", "test accuracy")
    better = {k: clearly_better(acc[k], acc["none"]) for k in names[1:]}
    sentence = ("Test accuracy: " + ", ".join(f"{k} {fmt(m[k])}" for k in names)
                + ". Better than none by more than the seed-to-seed std: "
                + (", ".join(k for k, v in better.items() if v) or "none") + ".")
    return Outcome(verdict(better.values()), sentence,
                   ", ".join(f"{k} {fmt(m[k])}" for k in names), [table], [fig],
                   [command(exp, "curriculum=none,self_paced_hard,pacing,superloss",
                            "seed=1,2,3", multirun=True)])


@lesson(11, "multitask", "Multi-task: equal vs uncertainty weighting vs GradNorm",
        "Learned task weights (uncertainty, GradNorm) balance tasks better than equal weights; "
        "the notes' optimum of the uncertainty term is σ² = √L.")
def multitask(ctx: Context) -> Outcome:
    exp = "experiment=multitask_uncertainty"
    names = ["equal", "uncertainty", "gradnorm"]
    tasks = ["reg0", "reg1", "reg2"]
    rmse: dict[str, dict[str, list[float]]] = {}
    sig: dict[str, list[float]] = {}
    for name in names:
        for seed in ctx.seeds:
            extra = ["~optim.lr_scales"] if name == "equal" else []  # no learned weights
            r = ctx.train([exp, f"multitask={name}", *extra, f"seed={seed}", ctx.epochs(25, 4)])
            for t in tasks:
                rmse.setdefault(name, {}).setdefault(t, []).append(r.get(f"test/{t}/rmse"))
                if name == "uncertainty":
                    sig.setdefault(t, []).append(r.get(f"multitask/sigma/{t}"))
    rows = [[k, *[mean_std(rmse[k][t]) for t in tasks]] for k in names]
    table = md_table(["weighting", *[f"test RMSE {t} (noise {s})" for t, s in
                                     zip(tasks, (0.1, 1.0, 3.0), strict=True)]], rows)
    s_rows, powers = [], {}
    for t in tasks:
        s2 = mean(sig[t]) ** 2
        loss = mean(rmse["uncertainty"][t]) ** 2
        # sigma^2 = L^p: p = 1 (the derivation) or p = 1/2 (the notes); undefined near L = 1
        informative = abs(math.log(loss)) > math.log(2)
        if informative:
            powers[t] = math.log(s2) / math.log(loss)
        s_rows.append([t, fmt(s2, 4), fmt(loss, 4), fmt(math.sqrt(loss), 4),
                       fmt(powers[t], 2) if informative else "– (L ≈ 1: L and √L coincide)"])
    table2 = md_table(["task", "learned σ²", "test MSE L", "√L (notes)",
                       "p in σ² = L^p (1: derivation, 0.5: notes)"], s_rows)
    closer_l = [abs(p - 1) < abs(p - 0.5) for p in powers.values()]
    m = {k: {t: mean(v) for t, v in d.items()} for k, d in rmse.items()}
    fig = plots.bars(ctx.figure("rmse_reg0"), names, [m[k]["reg0"] for k in names],
                     "Lesson 11: test RMSE of the clean task (noise 0.1)", "RMSE")
    checks = {"uncertainty beats equal on the clean task":
              clearly_better(rmse["uncertainty"]["reg0"], rmse["equal"]["reg0"], higher=False),
              "GradNorm beats equal on the clean task":
              clearly_better(rmse["gradnorm"]["reg0"], rmse["equal"]["reg0"], higher=False),
              "σ² = √L (notes)": bool(closer_l) and not any(closer_l)}
    sentence = ("Clean-task RMSE: " + ", ".join(f"{k} {fmt(m[k]['reg0'])}" for k in names)
                + "; learned σ² = L^p with p = "
                + ", ".join(f"{fmt(p, 2)} ({t})" for t, p in powers.items())
                + " on the tasks whose L is far from 1 (p = 1: σ² = L, p = 0.5: the notes' "
                "σ² = √L). "
                + held(checks))
    return Outcome(verdict(checks.values()), sentence,
                   "reg0 RMSE " + " / ".join(fmt(m[k]["reg0"]) for k in names)
                   + "; σ² = L^p, p = " + "/".join(fmt(p, 2) for p in powers.values()),
                   [table, table2], [fig],
                   [command(exp, "multitask=uncertainty,gradnorm", "seed=1,2,3",
                            multirun=True),
                    command(exp, "multitask=equal", "~optim.lr_scales", "seed=1,2,3",
                            multirun=True)])


@lesson(13, "saddle_plateau", "Saddle points and plateaus on 2-D surfaces",
        "Plain gradient descent stalls near saddle points and on plateaus; momentum and adaptive "
        "methods escape faster.")
def saddle_plateau(ctx: Context) -> Outcome:
    tables, figs, escape, shown = [], [], {}, {}
    for surface in toy.surfaces(ctx.quick):
        paths = {k: toy.trajectory(surface, make) for k, make in surface.optimizers.items()}
        rows = []
        for k, p in paths.items():
            hit = toy.steps_to(p, surface.minimum + 1e-3)
            rows.append([k, "never" if hit is None else hit, fmt(float(p[-1, 2]), 4),
                         f"({p[-1, 0]:.3f}, {p[-1, 1]:.3f})"])
            escape[(surface.name, k.split()[0])] = hit if hit is not None else surface.steps * 10
            shown[(surface.name, k.split()[0])] = str(hit) if hit is not None else \
                f"never ({surface.steps})"
        tables.append(f"**{surface.name}** (start {surface.start}, {surface.steps} steps)\n\n"
                      + md_table(["optimizer", "steps to f ≤ f* + 1e-3", "final f", "final point"],
                                 rows))
        figs.append(toy.plot(surface, paths, ctx.figure(surface.name)))
    checks = []
    for name in ("saddle", "rosenbrock"):
        sgd = escape[(name, "sgd")]
        checks.append(escape[(name, "momentum")] < sgd)
        checks.append(escape[(name, "adam")] < sgd)
    sentence = ("Steps to the minimum (saddle / Rosenbrock): "
                + ", ".join(f"{k} {shown[('saddle', k)]} / {shown[('rosenbrock', k)]}"
                            for k in ("sgd", "momentum", "nesterov", "rmsprop", "adam", "L-BFGS"))
                + " (an L-BFGS step is one iteration with a line search of up to 25 "
                "evaluations).")
    return Outcome(verdict(checks), sentence,
                   "steps to the minimum, saddle / Rosenbrock: "
                   + ", ".join(f"{k} {shown[('saddle', k)]} / {shown[('rosenbrock', k)]}"
                               for k in ("sgd", "momentum", "adam", "L-BFGS")),
                   tables, figs, ["python scripts/lessons.py --only saddle_plateau"])

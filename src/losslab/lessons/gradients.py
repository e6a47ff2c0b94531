"""Lessons 5, 6 and 12: gradient flow (init, activation), exploding gradients and clipping,
gradient checking."""

from __future__ import annotations

import torch

from losslab.lessons import plots
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
from losslab.lessons.stats import distinct_rows

FIRST, LAST = "grad/norm/model.blocks.0.linear", "grad/norm/model.head"


def _events(result, kind: str) -> int:
    return int(result.grad_health().get("summary", {}).get("events", {}).get(kind, 0))


def _grad_ratio(result) -> float:
    """Mean over logged steps of ||g_first layer|| / ||g_head||."""
    first, last = dict(result.curve(FIRST)), dict(result.curve(LAST))
    ratios = [first[s] / last[s] for s in first if s in last and last[s] > 0]
    return mean(ratios)


@lesson(5, "init_activation", "Sigmoid/tanh vs ReLU + He; Xavier vs He vs zero init",
        "Deep sigmoid/tanh nets have vanishing gradients, ReLU with He init does not and trains "
        "better; Xavier suits tanh, He suits ReLU; zero init never breaks the symmetry.")
def init_activation(ctx: Context) -> Outcome:
    exp = "experiment=lesson_init_activation"
    combos = [("sigmoid", "xavier_normal"), ("tanh", "xavier_normal"), ("relu", "xavier_normal"),
              ("relu", "he_normal"), ("tanh", "zeros"), ("relu", "zeros")]
    rows, acc, vanish, ratio, distinct = [], {}, {}, {}, {}
    for act, init in combos:
        key = f"{act} + {init}"
        for seed in ctx.seeds:
            r = ctx.train([exp, f"model.activation={act}", f"model.init={init}", f"seed={seed}",
                           ctx.epochs(10, 3)])
            acc.setdefault(key, []).append(r.get("test/acc"))
            vanish.setdefault(key, []).append(float(_events(r, "vanishing")))
            ratio.setdefault(key, []).append(_grad_ratio(r))
            if seed == ctx.seeds[0]:
                task, _ = r.load()
                distinct[key] = distinct_rows(task.model.blocks[0].linear.weight)
        rows.append([key, mean_std(acc[key]), fmt(mean(vanish[key]), 1), fmt(mean(ratio[key])),
                     f"{distinct[key]} / 64"])
    table = md_table(["activation + init (10 x 64, SGD)", "test accuracy", "vanishing events",
                      "‖g first layer‖ / ‖g head‖", "distinct units in layer 1"], rows)
    deep = {}
    for preset in ("vanishing_gradients", "healthy_gradients"):
        r = ctx.train([f"experiment={preset}", ctx.epochs(5, 1)])
        deep[preset] = (r.get("test/acc"), _events(r, "vanishing"), _grad_ratio(r))
    table2 = md_table(["preset (20 x 64)", "test accuracy", "vanishing events",
                       "‖g first‖ / ‖g head‖"],
                      [[k, fmt(a), v, fmt(g)] for k, (a, v, g) in deep.items()])
    labels = [f"{a}+{i}" for a, i in combos]
    fig = plots.bars(ctx.figure("grad_ratio"), labels,
                     [max(mean(ratio[f"{a} + {i}"]), 1e-30) for a, i in combos],
                     "Lesson 5: first-layer / head gradient norm (10 layers)", "ratio", log=True)
    fig2 = plots.bars(ctx.figure("accuracy"), labels, [mean(acc[f"{a} + {i}"]) for a, i in combos],
                      "Lesson 5: test accuracy after training", "accuracy", hline=0.1)
    m = {k: mean(v) for k, v in acc.items()}
    mv = {k: mean(v) for k, v in vanish.items()}
    he = "relu + he_normal"
    checks = {
        "sigmoid vanishes, relu+He does not": mv["sigmoid + xavier_normal"] > 0 and mv[he] == 0,
        "relu+He beats sigmoid and tanh": clearly_better(acc[he], acc["sigmoid + xavier_normal"])
        and clearly_better(acc[he], acc["tanh + xavier_normal"]),
        "He beats Xavier for relu": clearly_better(acc[he], acc["relu + xavier_normal"]),
        "zero init stays symmetric": all(distinct[f"{a} + zeros"] == 1 for a in ("tanh", "relu"))
        and max(m["tanh + zeros"], m["relu + zeros"]) < 0.15,
        "20-layer presets: vanishing flagged, healthy trains": deep["vanishing_gradients"][1] > 0
        and deep["healthy_gradients"][1] == 0
        and deep["healthy_gradients"][0] > deep["vanishing_gradients"][0],
    }
    sentence = (f"Accuracy relu+He {fmt(m[he])}, tanh+Xavier {fmt(m['tanh + xavier_normal'])}, "
                f"sigmoid+Xavier {fmt(m['sigmoid + xavier_normal'])}, relu+Xavier "
                f"{fmt(m['relu + xavier_normal'])}, zero init {fmt(m['relu + zeros'])}. "
                + held(checks))
    return Outcome(verdict(checks.values()), sentence,
                   f"acc relu+He {fmt(m[he])}, tanh {fmt(m['tanh + xavier_normal'])}, sigmoid "
                   f"{fmt(m['sigmoid + xavier_normal'])}, zeros {fmt(m['relu + zeros'])}; "
                   f"vanishing events sigmoid {fmt(mv['sigmoid + xavier_normal'], 1)}, "
                   f"relu+He {fmt(mv[he], 1)}", [table, table2], [fig, fig2],
                   [command(exp, "model.activation=sigmoid,tanh,relu",
                            "model.init=xavier_normal,he_normal,zeros", multirun=True),
                    command("experiment=vanishing_gradients"),
                    command("experiment=healthy_gradients")])


@lesson(6, "exploding_clipping", "Exploding gradients and clipping (norm, value, AGC)",
        "Without clipping an exploding network diverges (Inf/NaN); with gradient clipping "
        "(global norm, value, adaptive) training is stable.")
def exploding_clipping(ctx: Context) -> Outcome:
    exp = "experiment=exploding_gradients"
    variants = {"none": ["callbacks.grad_clip.mode=none"],
                "norm": ["callbacks.grad_clip.mode=norm"],
                "value": ["callbacks.grad_clip.mode=value"],
                "agc": ["callbacks.grad_clip.mode=agc"],
                "agc+head": ["callbacks.grad_clip.mode=agc",
                             "callbacks.grad_clip.agc_clip_last_layer=true"]}
    modes = list(variants)
    rows, stable, r2s, curves = [], {}, {}, {}
    for mode, ov in variants.items():
        for seed in ctx.seeds:
            r = ctx.train([exp, *ov, f"seed={seed}", ctx.epochs(20, 5)])
            s = r.grad_health().get("summary", {})
            r2 = r.get("test/r2")
            # stable = no Inf/NaN step, not stopped, and the fit did not blow up (R² > -1)
            ok = (_events(r, "non_finite") == 0 and not s.get("stopped", False) and r2 == r2
                  and r2 > -1)
            stable.setdefault(mode, []).append(ok)
            r2s.setdefault(mode, []).append(r2)
            if seed == ctx.seeds[0]:
                loss = r.curve("train/loss_step")  # Inf/NaN drawn at 1e30
                curves[mode] = ([st for st, _ in loss],
                                [min(v, 1e30) if v == v else 1e30 for _, v in loss])
                rows.append([mode, _events(r, "exploding"), _events(r, "non_finite"),
                             s.get("skipped_steps", 0), s.get("stopped", False)])
    table = md_table(["clip mode", "exploding events", "non-finite events", "skipped steps",
                      "stopped"], rows)
    table2 = md_table(["clip mode", "test R²", "stable runs (finite, not stopped, R² > -1)"],
                      [[m, mean_std(r2s[m]), f"{sum(stable[m])}/{len(stable[m])}"]
                       for m in modes])
    fig = plots.curves(ctx.figure("loss"), {k: v for k, v in curves.items() if v[0]},
                       "Lesson 6: training loss (Inf/NaN drawn at 1e30)", "step",
                       "train loss", logy=True)
    checks = [not any(stable["none"])] + [all(stable[m]) for m in modes[1:]]
    agc_note = ("" if all(stable["agc"]) or not all(stable["agc+head"]) else
                " AGC as published (Brock et al. 2021) leaves the last layer unclipped "
                "(agc_clip_last_layer=false, the default); here the head's gradient is what "
                "explodes, and clipping it too (agc+head) makes AGC stable.")
    ok_modes = [m for m in modes[1:] if all(stable[m])]
    bad = [m for m in modes[1:] if not all(stable[m])]
    sentence = (f"Without clipping {len(stable['none']) - sum(stable['none'])}/"
                f"{len(stable['none'])} runs diverge; stable with: {', '.join(ok_modes) or 'none'}"
                f"{'; not stable with: ' + ', '.join(bad) if bad else ''} (test R² "
                + ", ".join(f"{m} {fmt(mean(r2s[m]))}" for m in modes) + ")." + agc_note)
    return Outcome(verdict(checks), sentence,
                   "stable runs " + ", ".join(f"{m} {sum(stable[m])}/{len(stable[m])}"
                                              for m in modes), [table, table2], [fig],
                   [command(exp, "callbacks.grad_clip.mode=none,norm,value,agc", "seed=1,2,3",
                            multirun=True),
                    command(exp, "callbacks.grad_clip.mode=agc",
                            "callbacks.grad_clip.agc_clip_last_layer=true", "seed=1,2,3",
                            multirun=True)])


@lesson(12, "gradcheck", "Gradient checking on every loss; hand backprop equals autograd",
        "Every loss's analytic gradient matches central finite differences (relative error "
        "< 1e-5 'good'), and backpropagation written from the layer equations equals autograd.")
def gradcheck(ctx: Context) -> Outcome:
    from losslab.builders import build
    from losslab.cli import group_options
    from losslab.diagnostics.backprop import DERIVATIVES, mlp_gradients
    from losslab.diagnostics.gradcheck_targets import check_loss
    from losslab.lessons.runner import compose
    from losslab.losses import LOSSES
    from losslab.models import MODELS

    rows, failures, worst = [], [], 0.0
    for name in group_options("loss"):
        cfg = compose([f"loss={name}"], ctx.out_root / "gradcheck")
        loss = build(LOSSES, cfg.loss, drop=("reduction",))
        checks = check_loss(loss, name)
        bad = [c for c in checks if c.failed]
        failures += [f"{c.group}/{c.name}" for c in bad]
        err = max((c.rel_error for c in checks if c.checked), default=0.0)
        worst = max(worst, err)
        kinks = sum(len(c.kinks) for c in checks)
        rows.append([name, len(checks), fmt(err, 2), kinks, len(bad)])
    table = md_table(["loss", "tensors checked", "max relative error", "kink points excluded",
                      "likely bugs"], rows)
    bp_rows, bp_worst = [], 0.0
    for act in sorted(DERIVATIVES):
        for loss_name, out_dim in (("mse", 1), ("ce", 4)):
            torch.manual_seed(0)
            model = MODELS.build("mlp", input_shape=(6,), out_dim=out_dim, hidden=[8, 8, 8],
                                 activation=act, dropout=0.0).double().eval()
            x = torch.randn(16, 6, dtype=torch.float64)
            y = torch.randn(16, dtype=torch.float64) if loss_name == "mse" else \
                torch.randint(0, out_dim, (16,))
            _, hand = mlp_gradients(model, x, y, loss_name)
            out = model(x)
            value = torch.nn.functional.mse_loss(out.squeeze(-1), y) if loss_name == "mse" \
                else torch.nn.functional.cross_entropy(out, y)
            auto = dict(zip([n for n, _ in model.named_parameters()],
                            torch.autograd.grad(value, list(model.parameters())), strict=True))
            err = max(float((hand[k] - auto[k]).norm() / max(float(auto[k].norm()), 1e-300))
                      for k in auto)
            bp_worst = max(bp_worst, err)
            bp_rows.append([act, loss_name, fmt(err, 2)])
    table2 = md_table(["activation", "loss", "max relative error, hand vs autograd"], bp_rows)
    checks = [not failures, bp_worst < 1e-10]
    which = f" ({', '.join(failures[:5])})" if failures else ""
    sentence = (f"{len(rows)} losses checked, worst relative error {fmt(worst, 2)}, "
                f"{len(failures)} likely bugs{which}"
                f"; hand backprop vs autograd: worst relative error {fmt(bp_worst, 2)} over "
                f"{len(bp_rows)} activation/loss pairs (float64).")
    return Outcome(verdict(checks), sentence,
                   f"{len(rows)} losses, worst rel. error {fmt(worst, 2)}, {len(failures)} "
                   f"failures; backprop vs autograd {fmt(bp_worst, 2)}", [table, table2], [],
                   ["python scripts/gradcheck.py loss=all",
                    "pytest tests/diagnostics/test_diag_backprop.py"])

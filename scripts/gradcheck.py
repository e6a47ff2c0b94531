"""Gradient check: autograd against central finite differences in float64.

    python scripts/gradcheck.py loss=focal                # one loss on made-up inputs
    python scripts/gradcheck.py loss=all                  # every registered loss
    python scripts/gradcheck.py model=mlp                 # the model + the configured loss on a
    python scripts/gradcheck.py model=cnn1d loss=focal    #   tiny batch of the configured data

Any Hydra override of train.py works (loss.gamma=0.5, model.hidden=[64,64], data=digits ...);
`model=...` or `model.<key>=...` switches from the loss to the whole model. Options:
eps=1e-5 (finite-difference step), samples=4 (batch size of the model check),
max_elements=16 (elements sampled per parameter tensor; 0: all), seed=0.

Prints one row per checked tensor: relative error ||g_auto - g_num|| / max(||g_auto||, ||g_num||)
and the verdict (< 1e-7 excellent, < 1e-5 good, < 1e-3 acceptable, else likely bug), with
non-differentiable points (kinks) named and excluded. Exit code 0; 1 when a tensor is a likely
bug; 2 for a usage error.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from losslab.errors import UserError

EXIT_LIKELY_BUG, EXIT_USER_ERROR = 1, 2


@dataclass
class Options:
    eps: float = 1e-5
    samples: int = 4
    max_elements: int = 16
    seed: int = 0


def loss_checks(overrides: list[str], options: Options, out: Path) -> list:
    from losslab.builders import build
    from losslab.cli import group_options
    from losslab.diagnostics.config import compose_config, import_user_modules
    from losslab.diagnostics.gradcheck_targets import check_loss
    from losslab.losses import LOSSES

    names = [None]
    if "loss=all" in overrides:
        overrides = [o for o in overrides if o != "loss=all"]
        names = [f"loss={n}" for n in group_options("loss")]
    checks = []
    for name in names:
        cfg = compose_config(overrides + ([name] if name else []), out)
        import_user_modules(cfg)
        loss = build(LOSSES, cfg.loss, drop=("reduction",))
        label = str(cfg.loss.get("name", cfg.loss.get("_target_", "loss")))
        checks += check_loss(loss, label, eps=options.eps, seed=options.seed)
    return checks


def model_checks(overrides: list[str], options: Options, out: Path) -> list:
    from losslab.diagnostics.config import compose_config
    from losslab.diagnostics.gradcheck_targets import check_model
    from losslab.run import build_task, import_user_modules

    cfg = compose_config(overrides, out)
    import_user_modules(cfg)
    task, dm = build_task(cfg)
    if not hasattr(task, "loss_fn"):
        raise UserError("gradcheck model=...: multi-task data are not supported; choose a "
                        "single-task data set.")
    dm.setup("fit")
    x, y = dm.splits["train"]
    label = f"model {cfg.model.get('name', '?')} + {cfg.loss.get('name', 'loss')}"
    return check_model(task.model, task.loss_fn, x[: options.samples], y[: options.samples],
                       label, eps=options.eps, max_elements=options.max_elements or None,
                       seed=options.seed)


def main(argv: list[str] | None = None) -> int:
    from losslab.diagnostics.config import check_fields, split_options
    from losslab.diagnostics.gradcheck import format_table

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    try:
        options, overrides = split_options(args, Options())
        check_fields("gradcheck", options, eps=(1e-12, 1e-1), samples=(1, None),
                     max_elements=(0, None))
        with_model = any(o.startswith(("model=", "model.")) for o in overrides)
        with tempfile.TemporaryDirectory(prefix="losslab-gradcheck-") as out:
            if with_model:
                checks = model_checks(overrides, options, Path(out))
            else:
                checks = loss_checks(overrides, options, Path(out))
    except UserError as e:
        print(f"\ngradcheck: error: {e}\n", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_table(checks))
    failed = [c for c in checks if c.failed]
    kinks = sum(len(c.kinks) for c in checks)
    print(f"\n{len(checks)} tensors checked (float64, eps={options.eps:g}): "
          f"{len(failed)} likely bug(s), {kinks} non-differentiable point(s) excluded.")
    if failed:
        print("likely bug in: " + ", ".join(f"{c.group} / {c.name}" for c in failed),
              file=sys.stderr)
        return EXIT_LIKELY_BUG
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loss landscape of a trained run: a 1-D line from the initial to the final weights and a 2-D
filter-normalised random-direction surface around the final weights (Li et al. 2018).

    python scripts/landscape.py ckpt_path=outputs/2026-01-31/12-00-00/checkpoints/last.ckpt
    python scripts/landscape.py ckpt_path=last resolution=41 span=0.5 num_batches=0

The run's config is recomposed from its folder (.hydra/overrides.yaml; further Hydra overrides
may follow), the initial weights are rebuilt from that config and its seed (exactly what the run
started from; or give init_ckpt=<ckpt>), the final weights come from the checkpoint.
Options: resolution=21 (2-D grid points per axis), span=1.0 (grid [-span, span]^2),
steps_1d=41, alpha_min=-0.5, alpha_max=1.5, num_batches=10 (training batches per loss
evaluation; 0: the whole split), direction_seed=0, out_dir=<run>/landscape, progress=true.

Writes landscape_1d.png, landscape_2d.png, landscape.npz and landscape.json into
<run>/landscape/ and the two pictures as images (landscape/*) into <run>/tensorboard/.
Exit code 0, or 2 for a usage error (no checkpoint, a checkpoint that does not fit the config).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from losslab.errors import UserError

EXIT_USER_ERROR = 2


@dataclass
class Options:
    ckpt_path: str = ""
    init_ckpt: str = ""
    resolution: int = 21
    span: float = 1.0
    steps_1d: int = 41
    alpha_min: float = -0.5
    alpha_max: float = 1.5
    num_batches: int = 10
    direction_seed: int = 0
    out_dir: str = ""
    progress: bool = True


def run_folder(ckpt: Path) -> Path:
    """<run>/checkpoints/x.ckpt -> <run>; a checkpoint elsewhere -> its folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load_model_state(model: Any, path: Path) -> None:
    """Load the `model.*` weights of a Lightning checkpoint into `model` (strict)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        state = ckpt["state_dict"]
    except Exception as e:  # noqa: BLE001 (unpickling errors of all kinds)
        raise UserError(f"ckpt_path '{path}' is not a Lightning checkpoint written by a losslab "
                        f"run ({type(e).__name__}: {e}).") from e
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise UserError(f"ckpt_path '{path}' does not fit the model of this config: "
                        f"{str(e).splitlines()[0]} Pass the run's overrides (or use the "
                        "checkpoint inside its run folder).") from e


def batches_of(split: tuple[Any, Any], batch_size: int, num_batches: int) -> list:
    x, y = split
    n = len(y) if num_batches == 0 else min(len(y), num_batches * batch_size)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def load_weights(options: Options, overrides: list[str]) -> dict[str, Any]:
    """The run's config, task and data, and its initial and final weights."""
    import lightning.pytorch as L

    from losslab.diagnostics.config import compose_config, run_overrides
    from losslab.diagnostics.landscape import parameters_of
    from losslab.run import _checkpoint, build_task, import_user_modules

    if not options.ckpt_path:
        raise UserError("landscape: 'ckpt_path' must be set to a checkpoint of a run "
                        "(ckpt_path=<run>/checkpoints/last.ckpt, or ckpt_path=last).")
    ckpt = Path(_checkpoint(options.ckpt_path, Path.cwd()) or "")
    run_dir = run_folder(ckpt)
    cfg = compose_config(run_overrides(run_dir) + overrides, run_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # as losslab.run.train
    import_user_modules(cfg)
    task, dm = build_task(cfg)  # the model as the run built it: its initial weights
    if not hasattr(task, "loss_fn"):
        raise UserError("landscape: multi-task runs are not supported.")
    init = parameters_of(task.model)
    if options.init_ckpt:
        load_model_state(task.model, Path(_checkpoint(options.init_ckpt, Path.cwd()) or ""))
        init = parameters_of(task.model)
    load_model_state(task.model, ckpt)
    return {"cfg": cfg, "task": task, "dm": dm, "init": init,
            "final": parameters_of(task.model), "run_dir": run_dir, "ckpt": ckpt}


def compute(options: Options, overrides: list[str]) -> dict[str, Any]:
    """The 1-D line (train and val loss) and the 2-D surface (train loss)."""
    import numpy as np
    import torch

    from losslab.diagnostics.landscape import (
        Evaluator,
        filter_normalized_direction,
        interpolate,
        surface,
    )

    w = load_weights(options, overrides)
    model, loss, dm, final = w["task"].model, w["task"].loss_fn, w["dm"], w["final"]
    dm.setup("fit")
    bs = int(dm.batch_size)
    splits = {"train": batches_of(dm.splits["train"], bs, options.num_batches)}
    if "val" in dm.splits:
        splits["val"] = batches_of(dm.splits["val"], bs, options.num_batches)
    alphas = np.linspace(options.alpha_min, options.alpha_max, options.steps_1d)
    coords = np.linspace(-options.span, options.span, options.resolution)
    total = options.steps_1d * len(splits) + options.resolution ** 2
    bar = progress_bar(total, options.progress)
    start = time.perf_counter()
    line = {name: interpolate(Evaluator(model, loss, b), w["init"], final, alphas, bar.update)
            for name, b in splits.items()}
    g = torch.Generator().manual_seed(options.direction_seed)
    d1, d2 = filter_normalized_direction(final, g), filter_normalized_direction(final, g)
    grid = surface(Evaluator(model, loss, splits["train"]), final, d1, d2, coords, bar.update)
    seconds = time.perf_counter() - start
    bar.close()
    samples = sum(len(y) for _, y in splits["train"])
    return {"run_dir": w["run_dir"], "ckpt": w["ckpt"], "alphas": alphas, "line": line,
            "coords": coords, "grid": grid, "seconds": seconds, "samples": samples,
            "model": str(w["cfg"].model.get("name")), "loss": str(w["cfg"].loss.get("name"))}


def progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="landscape (loss evaluations)", unit="pt", disable=not enabled,
                file=sys.stderr, mininterval=1.0)


def write_outputs(result: dict[str, Any], options: Options) -> list[Path]:
    import numpy as np

    from losslab.diagnostics.plots import plot_interpolation, plot_surface

    run_dir = result["run_dir"]
    out = Path(options.out_dir) if options.out_dir else run_dir / "landscape"
    out.mkdir(parents=True, exist_ok=True)
    what = f"{result['model']} + {result['loss']}, {result['samples']} training samples"
    files = [out / "landscape_1d.png", out / "landscape_2d.png", out / "landscape.npz",
             out / "landscape.json"]
    image_1d = plot_interpolation(result["alphas"], {f"{k} loss": v for k, v in
                                                     result["line"].items()}, files[0],
                                  f"1-D interpolation, initial -> final ({what})")
    image_2d = plot_surface(result["coords"], result["grid"], files[1],
                            f"2-D filter-normalised surface ({what})")
    np.savez(files[2], alphas=result["alphas"], coords=result["coords"], surface=result["grid"],
             **{f"line_{k}": np.asarray(v) for k, v in result["line"].items()})
    grid = result["grid"]
    centre = grid[len(grid) // 2, len(grid) // 2]
    summary = {"checkpoint": str(result["ckpt"]), "seconds": round(result["seconds"], 3),
               "options": asdict(options), "train_loss_final": result["line"]["train"][
                   int(abs(result["alphas"] - 1.0).argmin())],
               "surface_centre": float(centre), "surface_min": float(grid.min()),
               "surface_max": float(grid.max()), "training_samples": result["samples"]}
    files[3].write_text(json.dumps(summary, indent=2))
    write_tensorboard(run_dir, {"landscape/interpolation_1d": image_1d,
                                "landscape/surface_2d": image_2d})
    return files


def write_tensorboard(run_dir: Path, images: dict[str, Any]) -> None:
    """The pictures as images in the run's TensorBoard folder (a separate events file)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), filename_suffix=".landscape")
    try:
        for tag, image in images.items():
            writer.add_image(tag, image, global_step=0, dataformats="HWC")
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    from losslab.diagnostics.config import check_fields, split_options

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    try:
        options, overrides = split_options(args, Options())
        check_fields("landscape", options, resolution=(2, 401), steps_1d=(2, 1001),
                     num_batches=(0, None), span=(1e-6, None))
        if options.alpha_max <= options.alpha_min:
            raise UserError(f"landscape: 'alpha_max' ({options.alpha_max}) must be greater than "
                            f"'alpha_min' ({options.alpha_min}).")
        result = compute(options, overrides)
        files = write_outputs(result, options)
    except UserError as e:
        print(f"\nlandscape: error: {e}\n", file=sys.stderr)
        return EXIT_USER_ERROR
    grid = result["grid"]
    print(f"landscape: {options.resolution}x{options.resolution} surface + "
          f"{options.steps_1d}-point line on {result['samples']} training samples in "
          f"{result['seconds']:.1f} s; loss at the trained weights "
          f"{grid[len(grid) // 2, len(grid) // 2]:.4g}, surface range "
          f"{grid.min():.4g} .. {grid.max():.4g}")
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `train.py` / `losslab-train` entry point: check the overrides, run Hydra, report errors
as one paragraph (no traceback unless HYDRA_FULL_ERROR=1) with a non-zero exit code."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from losslab import compose_once
from losslab.errors import UserError, did_you_mean
from losslab.startup import begin, resume_gc

CONF_DIR = Path(__file__).resolve().parent / "conf"
EXIT_USER_ERROR = 2
EXIT_SWEEP_FAILED = 3  # a multirun finished, but some of its jobs failed (see summary.md)
log = logging.getLogger(__name__)


def search_dirs(args: list[str] | None = None) -> list[Path]:
    """The packaged conf/ plus every `file://` folder of a `hydra.searchpath=[...]` override."""
    dirs = [CONF_DIR]
    for arg in args if args is not None else sys.argv[1:]:
        if arg.lstrip("+").startswith("hydra.searchpath="):
            for item in arg.split("=", 1)[1].strip("[]").split(","):
                item = item.strip().strip("'\"")
                if item.startswith("file://"):
                    dirs.append(Path(item[len("file://"):]).resolve())
    return dirs


def group_options(group: str, args: list[str] | None = None) -> list[str]:
    """The options of config group `group` (yaml files in conf/<group>/ of every search dir)."""
    return sorted({p.stem for d in search_dirs(args) for p in (d / group).glob("*.yaml")})


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def check_overrides(args: list[str]) -> None:
    """Unknown options of a config group (`loss=focall`) get the allowed list + did-you-mean.

    Sweep values (`loss=ce,focal`) are checked one by one; Hydra checks everything else.
    """
    groups = set(config_groups())
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or any(c in value for c in "()[]{}$"):
            continue
        options = group_options(key, args)
        for v in value.split(","):
            v = v.strip()
            if v in ("", "null", "none", "None") and key in ("experiment", "hparams_search",
                                                            "debug"):
                continue
            if v not in options:
                raise UserError(f"Unknown {key} '{v}' (from '{arg}'). Allowed {key} options: "
                                f"{', '.join(options)}.{did_you_mean(v, options)}")


def default_options() -> dict[str, str]:
    """group -> option chosen by train.yaml's defaults list."""
    from omegaconf import OmegaConf

    chosen = {}
    for entry in OmegaConf.load(CONF_DIR / "train.yaml").get("defaults", []):
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for k, v in dict(entry).items():
                if v is not None:
                    chosen[str(k).split("@")[0].replace("override ", "").strip("/")] = str(v)
    return chosen


def check_group_keys(args: list[str]) -> None:
    """`loss.gama=2` -> unknown key 'gama' of loss 'focal', with the valid keys and a guess.

    Only plain single-option overrides are checked (sweeps and '+key' additions pass through).
    """
    from omegaconf import OmegaConf

    groups = set(config_groups())
    chosen = default_options()
    for arg in args:
        if "=" in arg and not arg.startswith(("-", "+", "~")):
            key, value = arg.split("=", 1)
            if key in groups and "," not in value:
                chosen[key] = value
    presets = ("experiment", "hparams_search")  # may switch groups (mnist1d_optuna: focal)
    experiment_set = any(p in chosen for p in presets) or \
        any(a.startswith(tuple(f"{p}=" for p in presets)) for a in args)
    for arg in args:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        group, _, rest = key.partition(".")
        if not rest or group not in groups or group in ("callbacks", "logger", "trainer",
                                                        "hydra", "paths"):
            continue
        option = chosen.get(group)
        path = next((d / group / f"{option}.yaml" for d in search_dirs(args)
                     if (d / group / f"{option}.yaml").is_file()), CONF_DIR / "-")
        if option is None or not path.is_file() or experiment_set:
            continue
        keys = [str(k) for k in OmegaConf.load(path)]
        first = rest.split(".")[0]
        if first not in keys and "_target_" not in keys:
            raise UserError(
                f"Unknown key '{first}' in {group} '{option}' (from '{arg}'). Valid keys: "
                f"{', '.join(k for k in keys if k != 'name')}.{did_you_mean(first, keys)} "
                f"To add a new key on purpose, write '+{key}=...'.")


def check_output_dir(args: list[str]) -> None:
    """The run folder must be creatable: fail before Hydra does, with one clear line."""
    targets = [a.split("=", 1)[1].strip("'\"") for a in args  # a quoted path: its text
               if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    for target in targets or [os.getcwd()]:
        if "$" in target:
            continue
        path = Path(target)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".losslab-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(f"The output folder '{target}' cannot be written ({e.strerror}). "
                            "Choose another with hydra.run.dir=<folder> (multirun: "
                            "hydra.sweep.dir=<folder>), or run from a writable folder.") from e


def report(error: UserError) -> None:
    print(f"\nlosslab: error: {error}\n", file=sys.stderr)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    """One job: train (and test) as configured; return the optimized metric for sweepers."""
    from losslab.run import train
    from losslab.sweeps.ddp import release_ddp_job
    from losslab.sweeps.failures import divergence, one_line

    # Hydra's logging (console + train.log) gets Lightning's messages; drop Lightning's own
    # console handler so each line prints once.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    _clear_failure()
    finished = False
    try:
        metrics = train(cfg)
        finished = True
    except UserError as e:
        _record_failure(one_line(e), kind="user_error")
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report(e)
        if _is_multirun():
            return math.nan  # one bad job must not end the sweep
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        _record_failure(one_line(e))
        if not _is_multirun():
            raise
        # any other error fails this job only: traceback to the job's log, the sweep goes on
        log.error(f"job failed: {one_line(e)}", exc_info=True)
        return math.nan
    finally:
        resume_gc()  # a job that failed before training: the collector comes back on here
        # DDP: the job's rank processes end before the next job starts (after a failure of
        # this rank, the others may wait in a collective forever: short grace, then killed)
        release_ddp_job(timeout=120.0 if finished else 5.0)
    key = str(cfg.optimized_metric)
    value = metrics.get(f"{key}_best", metrics.get(key, math.nan))
    if f"{key}_best" in metrics or key in metrics:  # (a tuning search alone trains nothing)
        print(f"{key} (best) = {value:.6g}")
    diverged = divergence(metrics, key)
    if diverged:
        _record_failure(diverged, kind="diverged")
        print(f"losslab: {diverged}", file=sys.stderr)
        if _is_multirun():
            return math.nan
    return float(value)


def _clear_failure() -> None:
    """Drop an error.json left by an earlier run in this folder (a rerun of the same sweep)."""
    from hydra.core.hydra_config import HydraConfig

    from losslab.sweeps.failures import ERROR_FILE

    if HydraConfig.initialized() and os.environ.get("LOCAL_RANK", "0") == "0":
        (Path(HydraConfig.get().runtime.output_dir) / ERROR_FILE).unlink(missing_ok=True)


def _record_failure(message: str, kind: str = "exception") -> None:
    """error.json in the job folder (rank 0 only), read back by the sweep summary."""
    from hydra.core.hydra_config import HydraConfig

    from losslab.sweeps.failures import write_error

    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    try:
        write_error(HydraConfig.get().runtime.output_dir, message, kind)
    except (ValueError, OSError) as e:
        log.warning(f"could not write error.json: {e}")


def main() -> None:
    begin()  # collector paused until the run is set up, unused imports deferred (losslab.startup)
    compose_once.install()  # one Hydra composition for a single run, not two
    try:
        check_overrides(sys.argv[1:])
        check_group_keys(sys.argv[1:])
        check_output_dir(sys.argv[1:])
    except UserError as e:
        report(e)
        sys.exit(EXIT_USER_ERROR)
    hydra_main()
    from losslab.sweeps.summary import last_sweep

    sweep = last_sweep()
    if sweep is not None and sweep.failed and sweep.fail_exit:
        print(f"\nlosslab: {len(sweep.failed)} of {sweep.n_jobs} sweep jobs failed (see "
              f"{sweep.sweep_dir / 'summary.md'}; sweep_fail_exit=false exits 0).\n",
              file=sys.stderr)
        sys.exit(EXIT_SWEEP_FAILED)

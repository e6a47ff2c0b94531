"""DDP jobs inside a Hydra multirun.

Lightning's `ddp` strategy starts ranks 1..N-1 by re-running the script with the original
command line. In a multirun that line is the whole sweep (`-m loss=ce,focal ...`), so every
child rank would run a sweep of its own. `SweepDDPStrategy` starts each child rank with the
current job's own overrides instead, in the job's folder and in RUN mode:

    python -c 'from losslab.cli import main; main()' <job overrides> \
        hydra.run.dir=<job folder> hydra.mode=RUN hydra.output_subdir=null \
        hydra.job.name=train_ddp_rank<r>

and `release_ddp_job()` (called by cli.hydra_main after every job) waits for those processes,
destroys the process group and restores the environment, so the next job launches its own ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from losslab.sweeps.overrides import job_overrides

ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
ENTRY = "from losslab.cli import main; main()"

# per launched job: its rank processes and the environment before the launch
_launched: list[tuple[list[subprocess.Popen], dict[str, str | None]]] = []


def rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and working folder) that runs rank `local_rank` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    job_dir = HydraConfig.get().runtime.output_dir
    command = [sys.executable, "-c", ENTRY, *job_overrides(), f'hydra.run.dir="{job_dir}"',
               "hydra.mode=RUN", "hydra.output_subdir=null",
               f"hydra.job.name=train_ddp_rank{local_rank}"]
    return command, get_original_cwd()


class _RankObserver(_ChildProcessObserver):
    """Lightning's observer, but a failed rank ends the job's other ranks, not this process:
    the job then fails on its own (a broken collective) and the sweep goes on."""

    def _terminate_all(self) -> None:
        for p in self._child_processes:
            if p.poll() is None:
                p.send_signal(self._termination_signal)


class _JobLauncher(_SubprocessScriptLauncher):
    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes,
                                                   num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            _RankObserver(main_pid=os.getpid(), child_processes=self.procs).start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # not a Hydra job: Lightning's re-run of the script
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        env = self.cluster_environment
        saved = {k: os.environ.get(k) for k in ENV_KEYS}
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        self.procs = []
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            command, cwd = rank_command(local_rank)
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))
        _launched.append((self.procs, saved))


class SweepDDPStrategy(DDPStrategy):
    """`ddp` whose child ranks rerun the current Hydra job only (see the module docstring)."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            assert self.cluster_environment is not None
            self._launcher = _JobLauncher(self.cluster_environment, self.num_processes,
                                          self.num_nodes)


def release_ddp_job(timeout: float = 120.0) -> None:
    """End a DDP job cleanly: wait for the job's rank processes (killing them after `timeout`
    seconds), destroy the process group (after the ranks exit, so no peer sees its sockets
    close mid-message) and restore MASTER_PORT, LOCAL_RANK, ..."""
    while _launched:
        procs, saved = _launched.pop()
        for p in procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def write_rank_record(out_dir: Path, global_rank: int, world_size: int,
                      config: dict[str, Any]) -> Path:
    """`<out_dir>/ddp/rank<r>.json`: this rank's process, overrides and config digest, so a
    DDP job can be checked to have trained every rank with the same hyperparameters."""
    text = json.dumps(config, sort_keys=True, default=str)
    record = {"global_rank": global_rank, "world_size": world_size, "pid": os.getpid(),
              "output_dir": str(out_dir.resolve()), "overrides": job_overrides(),
              "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
              "optim": config.get("optim"), "loss": config.get("loss"), "seed": config.get("seed")}
    path = out_dir / "ddp" / f"rank{global_rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))
    return path

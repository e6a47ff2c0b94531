"""configure(): Hydra configs -> Lightning's configure_optimizers dict; the yaml files work."""

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import losslab
from losslab.errors import UserError
from losslab.optim import OPTIMIZERS, SCHEDULERS, configure
from losslab.optim.second_order import NewtonCG

CONF = Path(losslab.__file__).parent / "conf"
OPTIM_YAMLS = sorted((CONF / "optim").glob("*.yaml"))
SCHED_YAMLS = sorted((CONF / "scheduler").glob("*.yaml"))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1))


def test_every_registry_name_has_a_yaml_and_back():
    assert {p.stem for p in OPTIM_YAMLS} == set(OPTIMIZERS.names())
    assert {p.stem for p in SCHED_YAMLS} == set(SCHEDULERS.names())
    for p in OPTIM_YAMLS + SCHED_YAMLS:
        assert OmegaConf.load(p).name == p.stem


def test_default_experiment_values():
    adam = OmegaConf.load(CONF / "optim" / "adam.yaml")
    assert (adam.name, adam.lr, adam.weight_decay) == ("adam", 3e-3, 0.0)
    one = OmegaConf.load(CONF / "scheduler" / "onecycle.yaml")
    assert (one.name, one.interval, one.pct_start) == ("onecycle", "step", 0.3)
    none = OmegaConf.load(CONF / "scheduler" / "none.yaml")
    assert (none.name, none.interval) == ("none", "step")


@pytest.mark.parametrize("path", OPTIM_YAMLS, ids=lambda p: p.stem)
def test_optim_yaml_configures(path):
    cfg = OmegaConf.load(path)
    out = configure(_model(), cfg, OmegaConf.create({"name": "none", "interval": "step"}), 100, 5)
    assert set(out) == {"optimizer"}
    opt = out["optimizer"]
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == pytest.approx(float(cfg.lr))


@pytest.mark.parametrize("path", SCHED_YAMLS, ids=lambda p: p.stem)
def test_scheduler_yaml_configures(path):
    cfg = OmegaConf.load(path)
    out = configure(_model(), OmegaConf.load(CONF / "optim" / "adam.yaml"), cfg, 100, 100)
    if cfg.name == "none":
        assert "lr_scheduler" not in out
        return
    sched = out["lr_scheduler"]
    assert sched["interval"] == cfg.interval and sched["frequency"] == 1
    assert ("monitor" in sched) == (cfg.name == "plateau")
    if cfg.name == "plateau":
        assert sched["monitor"] == "val/loss"


def test_configure_param_groups_and_options_from_dictconfig():
    optim = OmegaConf.create({"name": "adamw", "lr": 1e-3, "weight_decay": 0.1,
                              "betas": [0.8, 0.9], "no_decay": ["bias", "norm"],
                              "lr_scales": {"3.*": 10.0}})
    sched = OmegaConf.create({"name": "onecycle", "interval": "step", "max_lr": 1e-2,
                               "cycle_momentum": False})
    out = configure(_model(), optim, sched, 50, 2)
    opt = out["optimizer"]
    by = {n: g for g in opt.param_groups for n in g["param_names"]}
    assert by["0.weight"]["weight_decay"] == 0.1 and by["0.bias"]["weight_decay"] == 0.0
    assert by["1.weight"]["weight_decay"] == 0.0  # LayerNorm
    assert by["3.weight"]["lr_scale"] == 10.0 and by["3.weight"]["max_lr"] == pytest.approx(0.1)
    assert by["0.weight"]["max_lr"] == pytest.approx(1e-2)
    assert by["0.weight"]["betas"] == (0.8, 0.9)
    assert out["lr_scheduler"]["scheduler"].total_steps == 50


def test_epoch_interval_uses_epochs_and_step_uses_steps():
    opt_cfg = {"name": "sgd", "lr": 0.1}
    s = configure(_model(), opt_cfg, {"name": "cosine", "interval": "epoch"}, 1000, 7)
    assert s["lr_scheduler"]["scheduler"].T_max == 7
    s = configure(_model(), opt_cfg, {"name": "cosine", "interval": "step"}, 1000, 7)
    assert s["lr_scheduler"]["scheduler"].T_max == 1000


def test_configure_errors():
    m = _model()
    with pytest.raises(UserError, match="reference implementation"):
        configure(m, {"name": "nadam", "impl": "reference"}, None, 10, 1)
    with pytest.raises(UserError, match="'impl'"):
        configure(m, {"name": "adam", "impl": "jax"}, None, 10, 1)
    with pytest.raises(UserError, match="'interval'"):
        configure(m, {"name": "adam"}, {"name": "cosine", "interval": "batch"}, 10, 1)
    with pytest.raises(UserError, match="unknown"):
        configure(m, {"name": "adam"}, {"name": "cosine"}, float("inf"), None)
    assert "lr_scheduler" not in configure(m, {"name": "adam"}, {"name": "none"},
                                           float("inf"), None)
    with pytest.raises(UserError, match="weight_decay"):
        configure(m, {"name": "lbfgs", "weight_decay": 0.1}, None, 10, 1)
    with pytest.raises(UserError, match="'lr'"):
        configure(m, {"name": "adam", "lr": 0}, None, 10, 1)
    with pytest.raises(UserError, match="Did you mean"):
        configure(m, {"name": "adam", "betaz": [0.9, 0.99]}, None, 10, 1)
    ref = configure(m, {"name": "adam", "impl": "reference"}, None, 10, 1)["optimizer"]
    assert type(ref).__module__ == "losslab.optim.reference"


class _Regression(L.LightningModule):
    def __init__(self, optim, sched):
        super().__init__()
        self.model = _model()
        self.optim, self.sched = optim, sched
        torch.manual_seed(1)
        self.x = torch.randn(64, 3)
        self.y = torch.tanh(self.x.sum(1, keepdim=True))
        self.losses = []

    def train_dataloader(self):
        ds = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(ds, batch_size=64)

    def training_step(self, batch, _):
        x, y = batch
        loss = ((self.model(x) - y) ** 2).mean()
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return configure(self.model, self.optim, self.sched,
                         self.trainer.estimated_stepping_batches, self.trainer.max_epochs)


@pytest.mark.parametrize("optim", [
    {"name": "adam", "lr": 3e-2},
    {"name": "lbfgs", "max_iter": 5},
    {"name": "newton_cg", "max_cg_iters": 10},
], ids=lambda c: c["name"])
def test_lightning_automatic_optimization(optim):
    module = _Regression(optim, {"name": "warmup_cosine", "interval": "step", "warmup_steps": 1})
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)
    trainer.fit(module)
    assert trainer.global_step == 4
    first = module.losses[0]
    with torch.no_grad():
        final = float(((module.model(module.x) - module.y) ** 2).mean())
    assert final < 0.8 * first
    if optim["name"] == "newton_cg":
        assert isinstance(trainer.optimizers[0], NewtonCG)
        assert len(module.losses) > 4 * 5  # closure re-evaluated for Hessian-vector products


class _ManualRegression(_Regression):
    """The documented recipe for optimizers with `needs_graph_closure` (natural_gradient)."""

    def __init__(self, optim, sched):
        super().__init__(optim, sched)
        self.automatic_optimization = False

    def training_step(self, batch, _):
        x, y = batch
        opt = self.optimizers()

        def closure():
            out = self.model(x)
            return ((out - y) ** 2).mean(), out

        loss = opt.step(closure)
        self.losses.append(float(loss))
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        return loss


def test_natural_gradient_in_lightning_manual_optimization():
    optim = OmegaConf.load(CONF / "optim" / "natural_gradient.yaml")
    module = _ManualRegression(optim, {"name": "none"})
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)
    trainer.fit(module)
    assert getattr(trainer.optimizers[0], "needs_graph_closure", False)
    with torch.no_grad():
        final = float(((module.model(module.x) - module.y) ** 2).mean())
    assert final < 0.5 * module.losses[0]

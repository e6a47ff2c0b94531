"""Every optimizer builds and reduces a tiny regression loss; bad hyper-parameters are refused."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from losslab.errors import UserError
from losslab.optim import CLOSURE_NAMES, OPTIMIZERS, NaturalGradient, NewtonCG

ALL = ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta",
       "nadam", "radam", "lbfgs", "newton_cg", "natural_gradient"]
LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "rmsprop": 1e-2, "adam": 1e-2,
      "adamw": 1e-2, "adagrad": 0.1, "adadelta": 1.0, "nadam": 1e-2, "radam": 5e-2}


def _problem():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = torch.tanh(x @ torch.tensor([[1.0], [-2.0], [0.5]])) + 0.3
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, x, y


def _mse(model, x, y):
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def test_catalog_is_complete():
    assert set(ALL) <= set(OPTIMIZERS.names())
    assert set(CLOSURE_NAMES) <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_optimizer_reduces_loss(name):
    model, x, y = _problem()
    kw = {"lr": LR[name]} if name in LR else {}
    opt = OPTIMIZERS.build(name, model.parameters(), **kw)
    before = _mse(model, x, y)

    def closure():
        opt.zero_grad()
        out = model(x)
        loss = ((out - y) ** 2).mean()
        if name == "natural_gradient":  # graph closure: (loss, outputs), no backward
            return loss, out
        loss.backward()
        return loss

    steps = 5 if name in CLOSURE_NAMES else 30
    for _ in range(steps):
        if name in CLOSURE_NAMES:
            opt.step(closure)
        else:
            closure()
            opt.step()
    after = _mse(model, x, y)
    assert after < 0.7 * before, (before, after)


def _closure_factory(model, x, y, form):
    def closure():
        out = model(x)
        per = ((out - y) ** 2).mean(1)
        if form == "standard":
            for p in model.parameters():
                p.grad = None
            per.mean().backward()
            return per.mean()
        return {"graph": per.mean(), "outputs": (per.mean(), out), "per_sample": per}[form]
    return closure


@pytest.mark.parametrize("cls,form", [(NewtonCG, "standard"), (NewtonCG, "graph"),
                                      (NewtonCG, "outputs"), (NaturalGradient, "outputs"),
                                      (NaturalGradient, "per_sample")])
def test_second_order_closure_forms(cls, form):
    model, x, y = _problem()
    opt = cls(model.parameters())
    before = _mse(model, x, y)
    closure = _closure_factory(model, x, y, form)
    for _ in range(8):
        opt.step(closure)
    assert _mse(model, x, y) < 0.3 * before
    assert opt.last["cg_iters"] >= 1 and opt.last["damping"] > 0
    assert all(p.grad is not None for p in model.parameters())
    if cls is NaturalGradient:
        assert opt.last_curvature == ("ggn" if form == "outputs" else "empirical")


def test_newton_cg_exact_and_finite_difference_hvp_agree_on_a_quadratic():
    # f(w) = 0.5 w'Aw - b'w: one undamped Newton step solves it exactly in both modes
    torch.manual_seed(0)
    m = torch.randn(5, 5, dtype=torch.float64)
    a, b = m @ m.T + 5 * torch.eye(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    w_star = torch.linalg.solve(a, b)
    for form in ("graph", "standard"):
        w = nn.Parameter(torch.zeros(5, dtype=torch.float64))
        opt = NewtonCG([w], damping=0.0, adapt_damping=False)

        def closure(form=form, w=w):
            loss = 0.5 * w @ a @ w - b @ w
            if form == "standard":
                w.grad = None
                loss.backward()
            return loss

        opt.step(closure)
        torch.testing.assert_close(w.detach(), w_star, atol=1e-5, rtol=0)


def test_natural_gradient_ggn_is_gauss_newton_for_linear_least_squares():
    # linear model + MSE: GGN = 2 X'X / N, so one undamped step is the least-squares solution
    torch.manual_seed(0)
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    lin = nn.Linear(4, 1, bias=False).double()
    opt = NaturalGradient(lin.parameters(), damping=0.0, adapt_damping=False)

    def closure():
        out = lin(x)
        return ((out - y) ** 2).mean(), out

    opt.step(closure)
    w_star = torch.linalg.lstsq(x, y).solution.T
    torch.testing.assert_close(lin.weight.detach(), w_star, atol=1e-8, rtol=0)


def test_second_order_weight_decay_and_param_groups():
    model, x, y = _problem()
    groups = [{"params": list(model[0].parameters()), "weight_decay": 0.1, "lr": 0.5},
              {"params": list(model[2].parameters()), "weight_decay": 0.0}]
    opt = OPTIMIZERS.build("newton_cg", groups, lr=1.0)
    before = _mse(model, x, y)
    for _ in range(5):
        opt.step(_closure_factory(model, x, y, "graph"))
    assert _mse(model, x, y) < before
    assert [g["lr"] for g in opt.param_groups] == [0.5, 1.0]
    sd = opt.state_dict()
    opt2 = OPTIMIZERS.build("newton_cg", groups, lr=1.0)
    opt2.load_state_dict(sd)
    assert opt2.state[groups[0]["params"][0]]["damping"] == opt.last["damping"]


def test_second_order_closure_errors():
    model, x, y = _problem()
    with pytest.raises(UserError, match="needs a closure"):
        OPTIMIZERS.build("newton_cg", model.parameters()).step()
    nat = OPTIMIZERS.build("natural_gradient", model.parameters())
    with pytest.raises(UserError, match=r"\(loss, outputs\)"):
        nat.step(_closure_factory(model, x, y, "standard"))  # Lightning-style closure
    with pytest.raises(UserError, match="per-sample"):
        nat.step(_closure_factory(model, x, y, "graph"))  # scalar loss: no Fisher
    with pytest.raises(UserError, match="does not depend on the outputs"):
        nat.step(lambda: (((model(x) - y) ** 2).mean(), model(x)))
    nat = OPTIMIZERS.build("natural_gradient", model.parameters(), fisher="ggn")
    with pytest.raises(UserError, match="fisher='ggn'"):
        nat.step(_closure_factory(model, x, y, "per_sample"))


@pytest.mark.parametrize("name,kw,key", [
    ("adam", {"lr": 0.0}, "lr"),
    ("sgd", {"lr": -1.0}, "lr"),
    ("momentum", {"momentum": 1.0}, "momentum"),
    ("sgd", {"momentum": -0.1}, "momentum"),
    ("adam", {"betas": (0.9, 1.0)}, "betas[1]"),
    ("adamw", {"betas": (-0.1, 0.9)}, "betas[0]"),
    ("nadam", {"betas": (0.9,)}, "betas"),
    ("adam", {"eps": 0.0}, "eps"),
    ("rmsprop", {"weight_decay": -1e-4}, "weight_decay"),
    ("rmsprop", {"alpha": 1.5}, "alpha"),
    ("newton_cg", {"damping": -1.0}, "damping"),
    ("natural_gradient", {"max_cg_iters": 0}, "max_cg_iters"),
    ("adam", {"impl": "numpy"}, "impl"),
    ("newton_cg", {"hvp": "exact"}, "hvp"),
])
def test_bad_hyperparameters_raise_user_error_naming_the_key(name, kw, key):
    model, _, _ = _problem()
    with pytest.raises(UserError) as err:
        OPTIMIZERS.build(name, model.parameters(), **kw)
    assert f"'{key}'" in str(err.value)


def test_unknown_names_and_kwargs_give_did_you_mean():
    model, _, _ = _problem()
    with pytest.raises(UserError, match="Did you mean 'nesterov'"):
        OPTIMIZERS.build("nestrov", model.parameters())
    with pytest.raises(UserError, match="Did you mean 'momentum'"):
        OPTIMIZERS.build("sgd", model.parameters(), momentun=0.9)
    assert OPTIMIZERS.canonical("Hessian-Free") == "newton_cg"


def test_hydra_listconfig_betas_reach_torch_as_tuple():
    model, _, _ = _problem()
    cfg = OmegaConf.create({"betas": [0.8, 0.95]})
    opt = OPTIMIZERS.build("adam", model.parameters(), betas=cfg.betas)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert type(opt.param_groups[0]["betas"][0]) is float


def test_nesterov_needs_momentum_and_lbfgs_refuses_groups():
    model, _, _ = _problem()
    with pytest.raises(UserError, match="nesterov"):
        OPTIMIZERS.build("sgd", model.parameters(), nesterov=True)
    groups = [{"params": list(model[0].parameters()), "weight_decay": 0.1},
              {"params": list(model[2].parameters()), "weight_decay": 0.0}]
    with pytest.raises(UserError, match="one parameter group"):
        OPTIMIZERS.build("lbfgs", groups)
    for g in groups:
        g["weight_decay"] = 0.0
    assert len(OPTIMIZERS.build("lbfgs", groups).param_groups) == 1


def test_lbfgs_one_iteration_per_step_does_not_stall():
    # torch's default max_eval (max_iter * 5 // 4) gives the line search no evaluation at
    # max_iter=1 and L-BFGS stops moving; the factory's default leaves room for it
    model, x, y = _problem()
    opt = OPTIMIZERS.build("lbfgs", model.parameters(), max_iter=1)
    losses = []

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(15):
        losses.append(float(opt.step(closure).detach()))
    assert losses[-1] < 0.2 * losses[0]
    assert len(set(losses[-5:])) == 5  # still moving


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_is_fused_on_cpu_by_default_and_matches_the_unfused_update(name) -> None:
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 4) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = OPTIMIZERS.build(name, params=models[0].parameters(), lr=1e-2)
    plain = OPTIMIZERS.build(name, params=models[1].parameters(), lr=1e-2, fused=False)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, opt in zip(models, (fused, plain), strict=True):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)

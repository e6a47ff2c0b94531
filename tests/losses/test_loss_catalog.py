"""Catalog-wide contract: every loss reduces, gradchecks, has a config and errors well."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import losslab
from losslab.errors import UserError
from losslab.losses import LOSSES, Loss

CONF = Path(losslab.__file__).parent / "conf" / "loss"
N, C, D = 6, 4, 3


def case(name: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """(params, pred, target) for each registry name: small inputs that fit the loss."""
    g = torch.Generator().manual_seed(seed)
    vec = torch.randn(N, generator=g, dtype=dtype)
    mat = torch.randn(N, C, generator=g, dtype=dtype)
    labels = torch.randint(0, C, (N,), generator=g)
    binary = torch.tensor([0, 1, 1, 0, 1, 0])
    emb = torch.randn(N, D, generator=g, dtype=dtype)
    emb_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.softmax(torch.randn(N, C, generator=g, dtype=dtype), 1)
    cases = {
        "mse": ({}, vec, torch.randn(N, generator=g, dtype=dtype)),
        "mae": ({}, vec, vec + 0.5 + torch.rand(N, generator=g, dtype=dtype)),
        "huber": ({"delta": 0.7}, vec * 2, torch.randn(N, generator=g, dtype=dtype)),
        "smooth_l1": ({"beta": 0.5}, vec * 2, torch.randn(N, generator=g, dtype=dtype)),
        "log_cosh": ({}, vec * 3, torch.randn(N, generator=g, dtype=dtype)),
        "quantile": ({"quantiles": [0.1, 0.5, 0.9]}, torch.randn(N, 3, generator=g, dtype=dtype),
                     torch.randn(N, generator=g, dtype=dtype) * 2),
        "gaussian_nll": ({}, torch.randn(N, 2, generator=g, dtype=dtype),
                         torch.randn(N, generator=g, dtype=dtype)),
        "bce": ({"pos_weight": 2.0}, vec * 3, binary.to(dtype)),
        "ce": ({"label_smoothing": 0.1, "class_weights": [1, 2, 0.5, 1], "temperature": 2.0,
                "confidence_penalty": 0.3}, mat, labels),
        "focal": ({"gamma": 2.0, "alpha": 0.25}, vec * 3, binary),
        "hinge": ({"margin": 1.0}, mat, labels),
        "kl": ({"temperature": 2.0}, mat, probs),
        "contrastive": ({"margin": 2.0}, emb, emb_labels),
        "triplet": ({"margin": 1.0, "mining": "all"}, emb, emb_labels),
        "combo": ({"terms": [{"name": "ce", "params": {"label_smoothing": 0.1}},
                             {"name": "focal", "weight": 0.5, "params": {"alpha": None}}]},
                  mat, labels),
    }
    return cases[name]


def test_every_loss_has_a_case_and_a_config() -> None:
    for name in LOSSES.names():
        case(name)  # KeyError if a new loss has no test case
        assert (CONF / f"{name}.yaml").is_file(), f"missing conf/loss/{name}.yaml"
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == LOSSES.names()


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_builds_and_runs(path: Path) -> None:
    cfg = OmegaConf.load(path)  # lists stay ListConfig: the losses must accept them
    assert cfg.name == path.stem
    assert "reduction" not in cfg
    params = {k: v for k, v in cfg.items() if k != "name"}
    fn = LOSSES.build(cfg.name, reduction="none", **params)
    _, pred, target = case(cfg.name, torch.float32)
    assert fn(pred, target).shape == (N,)


@pytest.mark.parametrize("name", LOSSES.names())
def test_reductions(name: str) -> None:
    params, pred, target = case(name)
    none = LOSSES.build(name, reduction="none", **params)(pred, target)
    assert none.shape == (N,)
    mean = LOSSES.build(name, reduction="mean", **params)(pred, target)
    total = LOSSES.build(name, reduction="sum", **params)(pred, target)
    assert mean.shape == () and total.shape == ()
    torch.testing.assert_close(mean, none.mean())
    torch.testing.assert_close(total, none.sum())
    # a per-call reduction (what the task asks a reduction='none' loss for) gives the same
    per_sample = LOSSES.build(name, reduction="none", **params)
    torch.testing.assert_close(per_sample(pred, target, reduction="mean"), mean)
    torch.testing.assert_close(per_sample(pred, target, reduction="sum"), total)
    assert per_sample(pred, target).shape == (N,)


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradcheck(name: str) -> None:
    params, pred, target = case(name)
    fn = LOSSES.build(name, reduction="none", **params)
    pred = pred.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: fn(p, target), (pred,))


@pytest.mark.parametrize("name", ["log_cosh", "focal", "huber", "ce", "kl", "contrastive"])
def test_gradgradcheck(name: str) -> None:
    """Second derivatives (Hessian-vector products) work through the hand-written backwards."""
    params, pred, target = case(name)
    fn = LOSSES.build(name, reduction="sum", **params)
    pred = pred.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda p: fn(p, target), (pred,))


@pytest.mark.parametrize("name", LOSSES.names())
def test_kind_and_flags(name: str) -> None:
    params, _, _ = case(name)
    fn = LOSSES.build(name, **params)
    assert isinstance(fn, Loss)
    assert fn.kind in ("regression", "classification", "embedding")
    assert fn.accepts_single_logit == (name in ("bce", "focal", "hinge"))
    assert fn.binary_only == (name == "bce")
    if fn.kind == "regression":
        assert fn.outputs_per_sample == {"quantile": 3, "gaussian_nll": 2}.get(name, 1)
    else:
        assert fn.outputs_per_sample is None


def test_unknown_name_and_parameter() -> None:
    with pytest.raises(UserError, match="Did you mean 'focal'"):
        LOSSES.build("focall")
    with pytest.raises(UserError, match="has no parameter 'gama'.*Did you mean 'gamma'"):
        LOSSES.build("focal", gama=2.0)
    assert type(LOSSES.build("L1")).__name__ == "MAELoss"
    assert type(LOSSES.build("Focal-Loss")).__name__ == "FocalLoss"


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("focal", {"gamma": -1.0}, r"'gamma' must be in \[0, inf\), got -1.0"),
        ("focal", {"alpha": 1.5}, r"'alpha' must be in \[0, 1\], got 1.5"),
        ("focal", {"alpha": [0.5, -0.1]}, r"'alpha' must be in \[0, inf\), got -0.1"),
        ("quantile", {"quantiles": [0.5, 1.0]}, r"'quantiles' must be in \(0, 1\), got 1.0"),
        ("quantile", {"quantiles": 0.5}, r"'quantiles' must be a list of numbers"),
        ("huber", {"delta": 0.0}, r"'delta' must be in \(0, inf\), got 0.0"),
        ("smooth_l1", {"beta": -1}, r"'beta' must be in \[0, inf\), got -1"),
        ("ce", {"label_smoothing": 1.0}, r"'label_smoothing' must be in \[0, 1\), got 1.0"),
        ("ce", {"temperature": 0}, r"'temperature' must be in \(0, inf\), got 0"),
        ("ce", {"confidence_penalty": -0.1}, r"'confidence_penalty' must be in \[0, inf\)"),
        ("ce", {"class_weights": [1, -2]}, r"'class_weights' must be in \[0, inf\), got -2"),
        ("bce", {"pos_weight": 0}, r"'pos_weight' must be in \(0, inf\), got 0"),
        ("hinge", {"margin": -1.0}, r"'margin' must be in \[0, inf\), got -1.0"),
        ("kl", {"temperature": -2.0}, r"'temperature' must be in \(0, inf\), got -2.0"),
        ("contrastive", {"margin": -0.5}, r"'margin' must be in \[0, inf\), got -0.5"),
        ("contrastive", {"distance": "manhattan"}, r"'distance' must be one of 'euclidean'"),
        ("triplet", {"mining": "semihard"}, r"'mining' must be one of.*Did you mean 'semi_hard'"),
        ("mse", {"reduction": "avg"}, r"'reduction' must be one of 'none', 'mean', 'sum'"),
    ],
)
def test_invalid_parameters(name: str, params: dict, match: str) -> None:
    with pytest.raises(UserError, match=f"loss '{name}'.*{match}"):
        LOSSES.build(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "pred", "target", "match"),
    [
        ("bce", {}, torch.randn(5, 10), torch.ones(5), r"\(5, 10\).*\(5,\).*use 'ce'"),
        ("bce", {}, torch.randn(5), torch.full((5,), 2.0), r"targets in \[0, 1\]"),
        ("ce", {}, torch.randn(5, 10), torch.tensor([0, 1, 2, 3, 10]),
         r"\(5, 10\).*\(5,\).*labels in \[0, 10\) \(got labels from 0 to 10\)"),
        ("ce", {}, torch.randn(5, 10), torch.tensor([0.0, 1.5, 2, 3, 4]), r"whole-number"),
        ("ce", {}, torch.randn(5), torch.zeros(5, dtype=torch.long), r"use 'bce' or 'focal'"),
        ("ce", {"class_weights": [1, 2]}, torch.randn(5, 3), torch.zeros(5, dtype=torch.long),
         r"2 classes \(len\(class_weights\)\)"),
        ("ce", {}, torch.randn(5, 3), torch.rand(5, 3), r"probability rows"),
        ("mse", {}, torch.randn(5, 10), torch.randn(5), r"\(5, 10\).*\(5,\).*pred \[N\]"),
        ("huber", {}, torch.randn(5), torch.randn(4), r"\(5,\).*\(4,\)"),
        ("quantile", {"quantiles": [0.1, 0.9]}, torch.randn(5), torch.randn(5), r"\[N, 2\]"),
        ("gaussian_nll", {}, torch.randn(5), torch.randn(5), r"\[N, 2\] \(mean, log-variance"),
        ("focal", {}, torch.randn(5, 3), torch.rand(5, 3), r"integer labels \[N\]"),
        ("focal", {"alpha": [0.2, 0.3, 0.5]}, torch.randn(5), torch.ones(5), r"'alpha' has 3"),
        ("focal", {"alpha": [0.2, 0.3]}, torch.randn(5, 3), torch.ones(5, dtype=torch.long),
         r"'alpha' has 2 entries.*3 classes"),
        ("hinge", {}, torch.randn(5), torch.tensor([-1, 0, 1, 1, 0]), r"got values \[-1, 0, 1\]"),
        ("kl", {"target_is_logits": True}, torch.randn(5, 3), torch.randn(5, 4), r"teacher"),
        ("contrastive", {}, torch.randn(5), torch.arange(5), r"\(5,\).*embeddings \[N, D\]"),
        ("triplet", {}, torch.randn(5, 8), torch.arange(4), r"\(5, 8\).*\(4,\)"),
    ],
)
def test_shape_and_label_errors(name, params, pred, target, match) -> None:
    fn = LOSSES.build(name, **params)
    with pytest.raises(UserError, match=f"loss '{name}'.*{match}"):
        fn(pred, target)


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_later_batch_errors_are_user_errors() -> None:
    """Shapes are checked on the first call only; torch errors later still become UserErrors."""
    fn = LOSSES.build("ce", reduction="none")
    fn(torch.randn(4, 10), torch.tensor([0, 1, 2, 9]))
    with pytest.raises(UserError, match=r"loss 'ce'.*\(4, 10\).*\(4,\).*labels in \[0, 10\)"):
        fn(torch.randn(4, 10), torch.tensor([0, 1, 2, 10]))
    reg = LOSSES.build("mse", reduction="none")
    reg(torch.randn(10), torch.randn(10))
    with pytest.raises(UserError, match=r"loss 'mse'.*\(10, 10\)"):
        reg(torch.randn(10, 10), torch.randn(10))  # would broadcast to [10, 10] silently


def test_listconfig_parameters() -> None:
    cfg = OmegaConf.create({"q": [0.2, 0.8], "w": [1.0, 2.0, 3.0], "a": [0.2, 0.3, 0.5]})
    quant = LOSSES.build("quantile", quantiles=cfg.q)
    assert quant.quantiles == [0.2, 0.8]
    ce = LOSSES.build("ce", class_weights=cfg.w, reduction="none")
    focal = LOSSES.build("focal", alpha=cfg.a, gamma=0.0, reduction="none")
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    torch.testing.assert_close(focal(z, y), torch.tensor([0.2, 0.3, 0.5, 0.5]) * ce(z, y) /
                               torch.tensor([1.0, 2.0, 3.0, 3.0]))


def test_custom_loss_registration() -> None:
    @LOSSES.register("my_test_loss")
    class MyTestLoss(Loss):
        """l = |pred - target|^p."""

        kind = "regression"

        def __init__(self, p: float = 3.0, reduction: str = "mean") -> None:
            super().__init__(reduction)
            self.p = p

        def per_sample(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return (pred - target).abs().pow(self.p)

    try:
        assert "my_test_loss" in LOSSES.names()
        fn = LOSSES.build("my_test_loss", p=2.0, reduction="sum")
        assert isinstance(fn, MyTestLoss)
        assert fn(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])).item() == 5.0
        with pytest.raises(UserError, match="has no parameter 'q'"):
            LOSSES.build("my_test_loss", q=1)
    finally:  # keep the registry clean for other tests
        LOSSES._entries.pop("my_test_loss", None)


def test_combo() -> None:
    terms = [{"name": "ce", "weight": 1.0, "params": {"label_smoothing": 0.1}},
             {"name": "focal", "weight": 0.5}]
    combo = LOSSES.build("combo", terms=terms, reduction="none")
    z, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    ce = LOSSES.build("ce", label_smoothing=0.1, reduction="none")
    focal = LOSSES.build("focal", reduction="none")
    torch.testing.assert_close(combo(z, y), ce(z, y) + 0.5 * focal(z, y))
    assert combo.kind == "classification" and not combo.accepts_single_logit
    # config objects (DictConfig / ListConfig) work as well
    cfg = OmegaConf.create({"terms": terms})
    torch.testing.assert_close(LOSSES.build("combo", terms=cfg.terms, reduction="none")(z, y),
                               combo(z, y))
    binary = LOSSES.build("combo", terms=[{"name": "bce"}, {"name": "focal"}])
    assert binary.accepts_single_logit


@pytest.mark.parametrize(
    ("terms", "match"),
    [
        ([{"name": "ce"}, {"name": "mse"}], r"same kind.*ce \(classification\), mse \(regression"),
        ([], r"at least one"),
        ("ce", r"'terms' must be a list"),
        ([{"name": "ce", "wieght": 2}], r"unknown key 'wieght'.*Did you mean 'weight'"),
        ([{"weight": 2}], r"missing 'name'"),
        ([{"name": "ce", "weight": -1}], r"'weight' must be in \[0, inf\)"),
        ([{"name": "ce", "params": {"reduction": "sum"}}], r"do not set 'reduction'"),
        ([{"name": "focal", "params": {"gamma": -2}}], r"loss 'focal'.*'gamma'"),
        ([{"name": "quantile", "params": {"quantiles": [0.1, 0.9]}}, {"name": "mse"}],
         r"different numbers of outputs"),
    ],
)
def test_combo_errors(terms, match) -> None:
    with pytest.raises(UserError, match=match):
        LOSSES.build("combo", terms=terms)


def test_loss_moves_with_module_and_keeps_buffers_out_of_state_dict() -> None:
    fn = LOSSES.build("ce", class_weights=[1.0, 2.0, 3.0])
    assert fn.state_dict() == {}  # configuration, not state: checkpoints stay loss-agnostic
    fn = fn.double()
    z, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    assert fn(z, y).dtype == torch.float64


@pytest.mark.parametrize("name", LOSSES.names())
def test_half_precision_inputs_under_autocast(name: str) -> None:
    """bf16 predictions (mixed precision) give a finite float32 loss and a bf16 gradient."""
    params, pred, target = case(name, torch.float32)
    pred = pred.to(torch.bfloat16).requires_grad_()
    fn = LOSSES.build(name, **params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(pred, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert pred.grad.dtype == torch.bfloat16 and torch.isfinite(pred.grad).all()


def test_two_argument_reduced_overrides_keep_working() -> None:
    """A user loss written for reduced(pred, target) is used for its own reduction; another
    per-call reduction reduces per_sample."""
    from losslab.losses.regression import MSELoss

    calls = []

    class Mine(MSELoss):
        def reduced(self, pred, target):
            calls.append(self.reduction)
            return self.per_sample(pred, target).mean() * 1.0

    pred, target = torch.randn(6), torch.randn(6)
    mine = Mine(reduction="mean")
    torch.testing.assert_close(mine(pred, target), torch.nn.functional.mse_loss(pred, target))
    assert calls == ["mean"]
    torch.testing.assert_close(mine(pred, target, reduction="sum"),
                               torch.nn.functional.mse_loss(pred, target, reduction="sum"))
    assert calls == ["mean"]  # the sum came from per_sample, not the override

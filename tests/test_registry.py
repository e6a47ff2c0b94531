import pytest

from losslab.errors import UserError, check_range, did_you_mean
from losslab.registry import Registry


def make() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("focal_thing", aliases=("ft",))
    class FocalThing:
        def __init__(self, gamma: float = 2.0) -> None:
            self.gamma = gamma

    class Child(FocalThing):
        def __init__(self, beta: float = 1.0, **kwargs) -> None:
            super().__init__(**kwargs)
            self.beta = beta

    reg.register("child")(Child)
    return reg


def test_build_by_name_alias_and_normalised_name():
    reg = make()
    assert reg.build("focal_thing", gamma=3.0).gamma == 3.0
    assert reg.build("FT").gamma == 2.0
    assert reg.build("Focal-Thing").gamma == 2.0
    assert reg.names() == ["child", "focal_thing"]


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(UserError, match=r"Unknown widget 'focal_thin'.*Did you mean 'focal_thing'"):
        make().build("focal_thin")


def test_no_truncation_matching():
    with pytest.raises(UserError):
        make().build("focal")  # a prefix is not a name


def test_unknown_kwarg_names_valid_parameters():
    with pytest.raises(UserError, match=r"no parameter 'gama'.*gamma.*Did you mean 'gamma'"):
        make().build("focal_thing", gama=1.0)


def test_kwargs_forwarded_to_parent_are_validated():
    reg = make()
    assert reg.build("child", beta=2.0, gamma=0.5).gamma == 0.5
    with pytest.raises(UserError, match="no parameter 'delta'"):
        reg.build("child", delta=1)


def test_duplicate_registration_fails():
    reg = make()
    with pytest.raises(ValueError):
        reg.register("FT")(object)


def test_check_range_message():
    with pytest.raises(UserError, match=r"optimizer 'adam': 'lr' must be in \(0, inf\), got -1"):
        check_range("optimizer 'adam'", "lr", -1, low=0, low_inclusive=False)
    with pytest.raises(UserError, match="must be a number"):
        check_range("x", "lr", "fast", low=0)
    assert did_you_mean("adamm", ["adam", "sgd"]) == " Did you mean 'adam'?"

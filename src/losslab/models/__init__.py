"""Models behind the MODELS registry: `MODELS.build(name, input_shape=..., out_dim=..., ...)`."""

from torch import nn

from losslab.models.activations import ACTIVATIONS
from losslab.models.cnn import cnn1d, cnn2d
from losslab.models.init import INITS, apply_init
from losslab.models.linear import Linear
from losslab.models.mlp import MLP
from losslab.models.rnn import GRU
from losslab.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
MODELS.register("mlp")(MLP)
MODELS.register("cnn1d", aliases=("cnn_1d",))(cnn1d)
MODELS.register("cnn2d", aliases=("cnn_2d", "cnn"))(cnn2d)
MODELS.register("linear", aliases=("logistic", "logreg"))(Linear)
MODELS.register("gru", aliases=("rnn",))(GRU)

__all__ = ["ACTIVATIONS", "GRU", "INITS", "MODELS", "MLP", "Linear", "apply_init", "cnn1d",
           "cnn2d"]

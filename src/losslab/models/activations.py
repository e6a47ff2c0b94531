"""Activation registry: `ACTIVATIONS.build("gelu")` returns an nn.Module."""

from __future__ import annotations

from torch import nn

from losslab.registry import Registry

ACTIVATIONS: Registry[nn.Module] = Registry("activation")

ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("leaky_relu", aliases=("lrelu",))(nn.LeakyReLU)
ACTIVATIONS.register("elu")(nn.ELU)
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("silu", aliases=("swish",))(nn.SiLU)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("identity", aliases=("linear", "none"))(nn.Identity)

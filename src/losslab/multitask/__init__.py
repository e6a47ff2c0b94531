"""Multi-task loss weighting strategies behind the WEIGHTINGS registry."""

from losslab.multitask.weighting import WEIGHTINGS, Weighting, build_weighting

__all__ = ["WEIGHTINGS", "Weighting", "build_weighting"]

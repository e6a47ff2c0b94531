"""Diagnostics: gradient checking, backprop by hand, Hessian tools, loss landscapes, curves.

gradcheck.py          finite differences (float64) against autograd, a verdict per tensor
gradcheck_targets.py  what to check: a loss on made-up inputs, or a model + loss on a batch
backprop.py           MLP forward/backward from the layer equations, no autograd
functions.py          a custom torch.autograd.Function with a hand-written backward (SiLU)
hessian.py            JVP / VJP / Hessian-vector products, top eigenvalue, trace
landscape.py          1-D interpolation and 2-D filter-normalised loss surfaces (Li et al. 2018)
curves.py             learning curves and per-layer gradient norms from TensorBoard events
plots.py              the matplotlib figures (PNG + RGB arrays for TensorBoard)
config.py             the scripts' options and the repository's Hydra config
"""

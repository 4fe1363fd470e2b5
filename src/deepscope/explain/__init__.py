"""Attribution methods. Importing this package registers every method family."""

from . import backprop, cam, gradients, lrp, occlusion, perturbation  # noqa: F401  (registration)
from .base import Method, Result, describe, explain, methods, register

__all__ = ["Method", "Result", "describe", "explain", "methods", "register"]

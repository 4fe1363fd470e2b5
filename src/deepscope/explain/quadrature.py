"""Quadrature rules for a path integral over [0, 1]: where to evaluate the integrand and with what weights.

Integrated gradients integrates the gradient along the straight path from the baseline to the input; each rule here
turns ``steps`` into nodes ``alphas`` in [0, 1] and ``weights`` that sum to 1 (the length of the interval), so a
constant integrand is integrated exactly by every rule.

Captum's ``method`` names the same rules (``gausslegendre``, ``riemann_*``). One difference: Captum's
``riemann_trapezoid`` weighs its ``n`` nodes ``linspace(0, 1, n)`` by ``1/n`` (halved at the ends), so its weights
sum to ``1 - 1/n`` and a constant integrand comes out ``1/n`` short; the trapezoid rule here weighs them by
``1/(n - 1)``, which is the trapezoid rule on those nodes (Captum's numbers times ``n/(n - 1)``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import BadInputError, close_names

Nodes = tuple[np.ndarray, np.ndarray]
"""(alphas, weights), float64 arrays of one length: the nodes in [0, 1] and their weights, summing to 1."""


def gauss_legendre(steps: int) -> Nodes:
    # Exact for polynomials of degree 2 * steps - 1; numpy's nodes on [-1, 1] mapped to [0, 1].
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def riemann_trapezoid(steps: int) -> Nodes:
    weights = np.full(steps, 1 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0, 1, steps), weights


def riemann_left(steps: int) -> Nodes:
    return np.arange(steps) / steps, np.full(steps, 1 / steps)


def riemann_right(steps: int) -> Nodes:
    return np.arange(1, steps + 1) / steps, np.full(steps, 1 / steps)


def riemann_middle(steps: int) -> Nodes:
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1 / steps)


RULES: dict[str, Callable[[int], Nodes]] = {
    "gauss_legendre": gauss_legendre,
    "riemann_trapezoid": riemann_trapezoid,
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
}

# The fewest steps each rule needs (the trapezoid's nodes include both ends).
_MINIMUM = {"riemann_trapezoid": 2}


def nodes(rule: object, steps: int) -> Nodes:
    """The nodes and weights of quadrature ``rule`` (a name of :data:`RULES`) with ``steps`` nodes."""
    if not isinstance(rule, str) or rule not in RULES:
        near = close_names(str(rule), RULES)
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise BadInputError(f"integration={rule!r} is not a quadrature rule.{hint} Choose from {', '.join(RULES)}.")
    minimum = _MINIMUM.get(rule, 1)
    if steps < minimum:
        raise BadInputError(f"integration={rule!r} needs steps >= {minimum} (its nodes include both ends).")
    return RULES[rule](steps)

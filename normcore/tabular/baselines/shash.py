"""The sinh-arcsinh (SHASH) warp of a standard normal, fitted by maximum likelihood with scipy."""

from __future__ import annotations

import numpy as np
from scipy import optimize, special


def shash_z(r: np.ndarray, p: dict) -> np.ndarray:
    """Normal score of r under SHASH(loc, scale, eps, delta): z = sinh(delta * asinh((r - loc)/scale) - eps)."""
    x = (np.asarray(r, float) - p["loc"]) / p["scale"]
    return np.sinh(p["delta"] * np.arcsinh(x) - p["eps"])


def shash_inverse(z: np.ndarray, p: dict) -> np.ndarray:
    """Value with normal score z (the quantile function applied to Phi(z))."""
    return p["loc"] + p["scale"] * np.sinh((np.arcsinh(np.asarray(z, float)) + p["eps"]) / p["delta"])


def shash_logpdf(r: np.ndarray, p: dict) -> np.ndarray:
    x = (np.asarray(r, float) - p["loc"]) / p["scale"]
    inner = p["delta"] * np.arcsinh(x) - p["eps"]
    z = np.sinh(inner)
    return (-0.5 * np.log(2 * np.pi) - 0.5 * z**2 + np.log(p["delta"]) + np.log(np.cosh(inner))
            - 0.5 * np.log1p(x**2) - np.log(p["scale"]))


def fit_shash(r: np.ndarray) -> dict:
    """Maximum-likelihood SHASH parameters of a 1-D sample (starts at the normal: eps=0, delta=1)."""
    r = np.asarray(r, float)
    start = np.array([np.median(r), np.log(r.std() or 1.0), 0.0, 0.0])

    def unpack(v):
        return {"loc": v[0], "scale": float(np.exp(v[1])), "eps": v[2], "delta": float(np.exp(np.clip(v[3], -3, 3)))}

    res = optimize.minimize(lambda v: -shash_logpdf(r, unpack(v)).sum(), start, method="L-BFGS-B")
    p = unpack(res.x)
    return {k: float(v) for k, v in p.items()}


def shash_moments(p: dict, n_nodes: int = 40) -> tuple[float, float]:
    """Mean and variance of SHASH(p) by Gauss-Hermite quadrature over the normal score."""
    nodes, weights = special.roots_hermitenorm(n_nodes)
    weights = weights / weights.sum()
    vals = shash_inverse(nodes, p)
    mean = float(weights @ vals)
    return mean, float(weights @ (vals - mean) ** 2)

"""Per-IDP Gaussianisation, fitted on training data only.

:class:`IDPTransformer`: a per-IDP monotone map to an approximately standard normal scale (``"standard"``
z-scoring, ``"yeo-johnson"`` or ``"quantile"``). Each map is strictly increasing, so quantiles and ranks computed on
the transformed scale map back exactly through the inverse.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from normcore.tabular.heavy_tails import fit_heavy_tails, tail_excess, tail_scores
from normcore.tabular.point_masses import body_to_latent, latent_to_body


class IDPTransformer:
    """Per-IDP strictly increasing Gaussianising map, fitted on training data.

    ``method``: ``"standard"`` (z-score), ``"yeo-johnson"`` (power transform then z-score) or
    ``"quantile"`` (piecewise-linear map of empirical quantiles to normal scores, with linear tails).
    Missing values (NaN) are left out of the fit and map to NaN.

    The quantile map's tails: beyond its knots at the outer 5% on each side (the anchors) the map is a line
    through the anchor, fitted by least squares to every training value beyond it against its normal score
    (plotting position (i - 0.5) / n). Values beyond the training range, the extremes scoring is asked about, are
    extrapolated along that line, so no single order statistic (the sample minimum or maximum) sets where they
    land. Maps saved without ``"tail_slopes"`` (by earlier versions) keep the knots to the sample extremes and
    extrapolate along the chord of the outer 5% of knots, so saved models score as they did.

    Fitted with ``groups`` (the rows' age bins, :func:`~normcore.tabular.heavy_tails.age_bins`), a side whose tail
    is significantly heavier than normal within the bins follows a generalised Pareto tail beyond its anchor
    instead of the line (:mod:`~normcore.tabular.heavy_tails`; ``"tail_gpd"`` in its parameters, absent when no side
    is heavy, as in maps saved before).
    """

    METHODS = ("standard", "yeo-johnson", "quantile")

    def __init__(self, method: str = "quantile", n_knots: int = 200):
        if method not in self.METHODS:
            raise ValueError(f"unknown transform {method!r}; choose one of {self.METHODS}")
        self.method = method
        self.n_knots = n_knots
        self.params: list[dict] = []

    def fit(self, y: np.ndarray, groups: np.ndarray | None = None) -> IDPTransformer:
        """Fit one map per column of ``y``; ``groups`` (the rows' age bins) let the quantile map test its tails."""
        y = np.asarray(y, float)
        self.params = [self._fit_column(y[:, j]) for j in range(y.shape[1])]
        if self.method == "quantile" and groups is not None:
            groups = np.asarray(groups)
            for j, p in enumerate(self.params):
                if "tail_slopes" not in p:  # too few distinct values for fitted tail lines: no tails to test
                    continue
                ok = ~np.isnan(y[:, j])
                tails = fit_heavy_tails(y[ok, j], groups[ok], (p["x"][0], p["x"][-1]), (p["z"][0], p["z"][-1]))
                if any(t is not None for t in tails):
                    p["tail_gpd"] = tails
        return self

    def _fit_column(self, col: np.ndarray) -> dict:
        col = col[~np.isnan(col)]  # missing values: the map is fitted on the observed ones (NaN maps to NaN)
        if self.method == "quantile":
            n = col.size
            probs = np.linspace(0.5 / n, 1 - 0.5 / n, min(self.n_knots, n))
            x = np.quantile(col, probs)
            z = special.ndtri(probs)
            x, first = np.unique(x, return_index=True)  # ties: keep strictly increasing knots
            z = z[first]
            return _with_tail_lines(np.sort(col), x, z)
        loc, scale = float(col.mean()), float(col.std() or 1.0)
        if self.method == "standard":
            return {"mean": loc, "std": scale}
        # Yeo-Johnson on a pre-standardised column keeps lambda well conditioned.
        pre = (col - loc) / scale
        lam = float(stats.yeojohnson_normmax(pre))
        post = stats.yeojohnson(pre, lam)
        return {"mean": loc, "std": scale, "lambda": lam, "post_mean": float(post.mean()),
                "post_std": float(post.std() or 1.0)}

    def heavy_tail_sides(self) -> list[tuple[int, str]]:
        """(column, ``"lower"`` or ``"upper"``) of every side that follows a generalised Pareto tail."""
        return [(j, side) for j, p in enumerate(self.params)
                for side, tail in zip(("lower", "upper"), p.get("tail_gpd") or (None, None), strict=True)
                if tail is not None]

    def set_point_masses(self, shares: np.ndarray) -> IDPTransformer:
        """``shares`` (D, 2): each column's probability at its floor and at its ceiling (0: none;
        :mod:`~normcore.tabular.point_masses`). The map of such a column, fitted to the values between them (its
        body), then places the body's normal scores between those shares of the latent scale; the inverse gives
        -inf (+inf) in the floor's (ceiling's) share. Maps saved without ``"mass"`` have none."""
        for p, (low, high) in zip(self.params, np.asarray(shares, float), strict=True):
            if low > 0 or high > 0:
                p["mass"] = [float(low), float(high)]
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, float)
        return np.stack([self._with_mass(self._forward(y[:, j], p), p) for j, p in enumerate(self.params)], axis=1)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, float)
        return np.stack([self._inverse_with_mass(z[:, j], p) for j, p in enumerate(self.params)], axis=1)

    @staticmethod
    def _with_mass(scores: np.ndarray, p: dict) -> np.ndarray:
        return body_to_latent(scores, *p["mass"]) if "mass" in p else scores

    def _inverse_with_mass(self, col: np.ndarray, p: dict) -> np.ndarray:
        if "mass" not in p:
            return self._inverse(col, p)
        body = latent_to_body(col, *p["mass"])
        at_bound = np.isinf(body)
        out = self._inverse(np.where(at_bound, 0.0, body), p)
        return np.where(at_bound, body, out)

    def _forward(self, col: np.ndarray, p: dict) -> np.ndarray:
        if self.method == "quantile":
            out = _piecewise_linear(col, np.asarray(p["x"]), np.asarray(p["z"]), p.get("tail_slopes"))
            for upper, tail in enumerate(p.get("tail_gpd") or ()):
                if tail is not None:
                    anchor = p["x"][-1] if upper else p["x"][0]
                    beyond = col > anchor if upper else col < anchor
                    score = tail_scores(np.abs(col[beyond] - anchor), tail)
                    out[beyond] = score if upper else -score
            return out
        pre = (col - p["mean"]) / p["std"]
        if self.method == "standard":
            return pre
        return (_yeojohnson(pre, p["lambda"]) - p["post_mean"]) / p["post_std"]

    def _inverse(self, col: np.ndarray, p: dict) -> np.ndarray:
        if self.method == "quantile":
            slopes = p.get("tail_slopes")
            inverse = None if slopes is None else [1.0 / slopes[0], 1.0 / slopes[1]]
            out = _piecewise_linear(col, np.asarray(p["z"]), np.asarray(p["x"]), inverse)
            for upper, tail in enumerate(p.get("tail_gpd") or ()):
                if tail is not None:
                    anchor, score = (p["x"][-1], p["z"][-1]) if upper else (p["x"][0], p["z"][0])
                    beyond = col > score if upper else col < score
                    excess = tail_excess(np.abs(col[beyond]), tail)
                    out[beyond] = anchor + excess if upper else anchor - excess
            return out
        if self.method == "standard":
            return col * p["std"] + p["mean"]
        pre = _yeojohnson_inverse(col * p["post_std"] + p["post_mean"], p["lambda"])
        return pre * p["std"] + p["mean"]

    def to_dict(self) -> dict:
        return {"method": self.method, "n_knots": self.n_knots, "params": self.params}

    @classmethod
    def from_dict(cls, data: dict) -> IDPTransformer:
        tr = cls(data["method"], int(data.get("n_knots", 200)))
        tr.params = data["params"]
        return tr


def _outer_chords(xp: np.ndarray, fp: np.ndarray) -> tuple[float, float]:
    """Slopes (low side, high side) of the chords spanning the outer 5% of the knots ``xp`` -> ``fp``."""
    k = max(1, xp.size // 20)
    return (float((fp[k] - fp[0]) / (xp[k] - xp[0])), float((fp[-1] - fp[-1 - k]) / (xp[-1] - xp[-1 - k])))


def _with_tail_lines(ordered: np.ndarray, x: np.ndarray, z: np.ndarray) -> dict:
    """Quantile-map parameters whose tails are least-squares lines through the outer-5% anchors.

    ``ordered``: the training column sorted; ``x``, ``z``: the strictly increasing knots and their normal scores.
    Returns the knots between the two anchors (the knots the outer-5% chords end on) and ``tail_slopes`` (low
    side, high side; each > 0, in normal score per unit). A side whose values beyond the anchor do not determine a
    positive slope keeps its chord. Fewer than four knots keep every knot and the chords (no interior would be left).
    """
    if x.size < 4:
        return {"x": x.tolist(), "z": z.tolist()}
    k = max(1, x.size // 20)
    scores = special.ndtri((np.arange(1, ordered.size + 1) - 0.5) / ordered.size)
    slopes = []
    sides = zip((k, x.size - 1 - k), (scores < z[k], scores > z[-1 - k]), _outer_chords(x, z), strict=True)
    for anchor, outside, chord in sides:
        dx, dz = ordered[outside] - x[anchor], scores[outside] - z[anchor]
        denom = float(np.sum(dx * dx))
        slope = float(np.sum(dx * dz)) / denom if denom > 0 else 0.0
        slopes.append(slope if slope > 0 and np.isfinite(slope) else chord)
    return {"x": x[k:x.size - k].tolist(), "z": z[k:x.size - k].tolist(), "tail_slopes": slopes}


def _piecewise_linear(v: np.ndarray, xp: np.ndarray, fp: np.ndarray,
                      slopes: list[float] | None = None) -> np.ndarray:
    """Monotone interpolation with linear extrapolation beyond the first and last knots.

    The extrapolation slopes are ``slopes`` (low side, high side) when given; otherwise the chords spanning the
    outer 5% of knots (maps saved before the fitted tail lines).
    """
    if xp.size == 1:
        return v - xp[0] + fp[0]
    out = np.interp(v, xp, fp)
    lo_slope, hi_slope = _outer_chords(xp, fp) if slopes is None else slopes
    out = np.where(v < xp[0], fp[0] + (v - xp[0]) * lo_slope, out)
    return np.where(v > xp[-1], fp[-1] + (v - xp[-1]) * hi_slope, out)


def _yeojohnson(x: np.ndarray, lam: float) -> np.ndarray:
    return stats.yeojohnson(x, lam)


def _yeojohnson_inverse(y: np.ndarray, lam: float) -> np.ndarray:
    x = np.empty_like(y)
    pos = y >= 0
    if abs(lam) < 1e-8:
        x[pos] = np.expm1(y[pos])
    else:
        x[pos] = np.power(np.maximum(y[pos] * lam + 1, 1e-12), 1 / lam) - 1
    if abs(lam - 2) < 1e-8:
        x[~pos] = -np.expm1(-y[~pos])
    else:
        x[~pos] = 1 - np.power(np.maximum(-(2 - lam) * y[~pos] + 1, 1e-12), 1 / (2 - lam))
    return x

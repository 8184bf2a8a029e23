"""Synthetic normative cohort with an exact, closed-form ground truth.

Every IDP j is generated as

    y_j = mu_j(age, sex) + shift_{site,j} * s_j + sigma_j(age) * scale_site * D_j(e_j; age)

where ``e`` is a latent standard-normal vector whose correlation grows with age (a two-factor
Gaussian copula), ``sigma_j`` grows with age (heteroscedastic noise) and ``D_j`` is one of three
monotone "deviate" maps from the latent normal score to the IDP scale:

* ``gaussian``: D(e) = e;
* ``skewed``:   a sinh-arcsinh map (right or left skew);
* ``bimodal``:  the quantile function of a two-component normal mixture whose weight depends on age.

Because each D_j is monotone, the conditional CDF of every IDP is exact:
F_j(y | c) = Phi(D_j^{-1}((y - mu - shift) / (sigma * scale))), and the true deviation score of a
subject is its latent e_j. Patients get ``e_j + shift`` on chosen IDPs, i.e. a known shift in z units.
The whole truth is a small set of numbers, saved as JSON so any tool can reproduce it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

KINDS_CYCLE = ("bimodal", "skewed", "gaussian", "skewed", "gaussian")
AGE_RANGE = (15.0, 95.0)
_MIX_OFFSET = 1.2  # bimodal components sit at -/+ this many sigma
_MIX_SD = 0.5  # and have this many sigma standard deviation


@dataclass
class SyntheticTruth:
    """Exact generative model of a synthetic normative cohort (see module docstring)."""

    d: int
    seed: int = 0
    n_sites: int = 0
    kinds: list[str] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    amp: list[float] = field(default_factory=list)
    trend: list[int] = field(default_factory=list)
    sex_effect: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    hetero: list[float] = field(default_factory=list)
    skew: list[float] = field(default_factory=list)
    mix_centre: list[float] = field(default_factory=list)
    factor: list[int] = field(default_factory=list)
    loading: list[float] = field(default_factory=list)
    site_shift: list[list[float]] = field(default_factory=list)
    site_scale: list[float] = field(default_factory=list)

    @classmethod
    def create(cls, d: int = 10, n_sites: int = 0, seed: int = 0) -> SyntheticTruth:
        """Draw the parameters of a D-IDP truth (2 <= D <= 200) from ``seed``."""
        if not 2 <= d <= 200:
            raise ValueError(f"d must be between 2 and 200, got {d}")
        if n_sites < 0:
            raise ValueError("n_sites must be >= 0")
        rng = np.random.default_rng(seed)
        kinds = [KINDS_CYCLE[j % len(KINDS_CYCLE)] for j in range(d)]
        signs = np.cumsum([k == "skewed" for k in kinds]) % 2 * 2 - 1  # alternate right/left skew
        skew = [float(rng.uniform(0.4, 0.8) * signs[j]) if kinds[j] == "skewed" else 0.0 for j in range(d)]
        loading = rng.uniform(0.75, 1.0, d) * np.where(rng.random(d) < 0.7, 1.0, -1.0)
        return cls(
            d=d,
            seed=seed,
            n_sites=n_sites,
            kinds=kinds,
            base=rng.uniform(1.0, 5.0, d).round(3).tolist(),
            amp=rng.uniform(0.3, 1.0, d).round(3).tolist(),
            trend=rng.integers(0, 4, d).tolist(),
            sex_effect=rng.uniform(-0.3, 0.3, d).round(3).tolist(),
            scale=rng.uniform(0.15, 0.4, d).round(3).tolist(),
            hetero=rng.uniform(0.3, 1.0, d).round(3).tolist(),
            skew=skew,
            mix_centre=rng.uniform(35.0, 75.0, d).round(2).tolist(),
            factor=rng.integers(0, 2, d).tolist(),
            loading=loading.round(3).tolist(),
            site_shift=rng.normal(0.0, 0.4, (n_sites, d)).round(3).tolist(),
            site_scale=np.exp(rng.normal(0.0, 0.15, n_sites)).round(3).tolist(),
        )

    # ------------------------------------------------------------------ names and covariates
    @property
    def idp_names(self) -> list[str]:
        width = max(2, len(str(self.d)))
        return [f"idp_{j + 1:0{width}d}" for j in range(self.d)]

    @property
    def site_names(self) -> list[str]:
        return [f"site_{k + 1:02d}" for k in range(self.n_sites)]

    def _idp_index(self, idp: int | str) -> int:
        if isinstance(idp, str):
            return self.idp_names.index(idp)
        return int(idp)

    def _site_effects(self, site, j: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.n_sites == 0 or site is None:
            return np.zeros(n), np.ones(n)
        site = np.broadcast_to(np.asarray(site, dtype=object), (n,))
        idx = np.array([self.site_names.index(str(s)) for s in site])
        shift = np.asarray(self.site_shift)[idx, j] * self.scale[j]
        return shift, np.asarray(self.site_scale)[idx]

    # ------------------------------------------------------------------ location and scale
    def location(self, age, sex, j: int) -> np.ndarray:
        """Conditional location mu_j(age, sex) before site effects."""
        a = (np.asarray(age, dtype=float) - 50.0) / 25.0
        curves = (
            -(a + 0.5 * a**2),  # accelerating decline
            np.tanh(1.5 * a),  # sigmoid rise
            -np.exp(0.8 * a) + 1.0,  # exponential decline
            0.6 * a - 0.4 * a**2,  # inverted U
        )
        return self.base[j] + self.amp[j] * curves[self.trend[j]] + self.sex_effect[j] * np.asarray(sex, float)

    def spread(self, age, j: int) -> np.ndarray:
        """Conditional scale sigma_j(age): grows linearly with age (heteroscedastic)."""
        frac = (np.asarray(age, dtype=float) - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])
        return self.scale[j] * (0.7 + self.hetero[j] * np.clip(frac, -0.2, 1.5))

    def mixture_weight(self, age, j: int) -> np.ndarray:
        """Weight of the upper component of a bimodal IDP (rises with age)."""
        return special.expit((np.asarray(age, dtype=float) - self.mix_centre[j]) / 8.0)

    # ------------------------------------------------------------------ deviate maps
    def _deviate(self, e: np.ndarray, age, j: int) -> np.ndarray:
        kind = self.kinds[j]
        if kind == "gaussian":
            return e
        if kind == "skewed":
            eps = self.skew[j]
            return np.sinh(np.arcsinh(e) + eps) - np.sinh(eps)
        w = self.mixture_weight(age, j)
        return _mixture_quantile(special.ndtr(e), w)

    def _inverse_deviate(self, v: np.ndarray, age, j: int) -> np.ndarray:
        """Latent normal score of a standardised deviate v (the exact z of the subject)."""
        kind = self.kinds[j]
        if kind == "gaussian":
            return v
        if kind == "skewed":
            eps = self.skew[j]
            return np.sinh(np.arcsinh(v + np.sinh(eps)) - eps)
        w = self.mixture_weight(age, j)
        return special.ndtri(np.clip(_mixture_cdf(v, w), 1e-300, 1 - 1e-16))

    # ------------------------------------------------------------------ exact truth
    def _standardise(self, y, age, sex, site, j: int) -> np.ndarray:
        y, age, sex = np.broadcast_arrays(np.asarray(y, float), np.asarray(age, float), np.asarray(sex, float))
        shift, site_scale = self._site_effects(site, j, y.size)
        shift, site_scale = shift.reshape(y.shape), site_scale.reshape(y.shape)
        return (y - self.location(age, sex, j) - shift) / (self.spread(age, j) * site_scale)

    def true_z(self, y, age, sex, idp: int | str, site=None) -> np.ndarray:
        """Exact deviation score Phi^{-1}(F(y | c)) of observations y of one IDP."""
        j = self._idp_index(idp)
        age_b = np.broadcast_to(np.asarray(age, float), np.shape(y))
        return self._inverse_deviate(self._standardise(y, age, sex, site, j), age_b, j)

    def cdf(self, y, age, sex, idp: int | str, site=None) -> np.ndarray:
        """Exact conditional CDF F(y | age, sex, site) of one IDP (vectorised)."""
        j = self._idp_index(idp)
        v = self._standardise(y, age, sex, site, j)
        if self.kinds[j] == "bimodal":
            w = np.broadcast_to(self.mixture_weight(age, j), v.shape)
            return _mixture_cdf(v, w)
        return special.ndtr(self._inverse_deviate(v, age, j))

    def quantile(self, q, age, sex, idp: int | str, site=None) -> np.ndarray:
        """Exact conditional quantile Q(q | age, sex, site) of one IDP (vectorised)."""
        j = self._idp_index(idp)
        q, age, sex = np.broadcast_arrays(np.asarray(q, float), np.asarray(age, float), np.asarray(sex, float))
        if self.kinds[j] == "bimodal":
            v = _mixture_quantile(q, self.mixture_weight(age, j))
        else:
            v = self._deviate(special.ndtri(q), age, j)
        shift, site_scale = self._site_effects(site, j, q.size)
        return (self.location(age, sex, j) + shift.reshape(q.shape)
                + self.spread(age, j) * site_scale.reshape(q.shape) * v)

    def latent_correlation(self, age: float) -> np.ndarray:
        """Correlation matrix of the latent normal scores (the copula) at one age."""
        a = self._loadings(np.array([float(age)]))[0]
        r = a @ a.T
        np.fill_diagonal(r, 1.0)
        return r

    def _loadings(self, age: np.ndarray) -> np.ndarray:
        """(n, d, 2) factor loadings: dependence strengthens with age."""
        frac = np.clip((age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0]), 0.0, 1.0)
        strength = 0.3 + 0.5 * frac  # loading magnitude 0.3 (young) .. 0.8 (old), times |loading|
        load = np.zeros((age.size, self.d, 2))
        cols = np.asarray(self.factor)
        load[:, np.arange(self.d), cols] = strength[:, None] * np.asarray(self.loading)[None, :]
        return load

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        seed: int = 0,
        patients: int = 0,
        patient_shift: float = 1.5,
        patient_idps: list[int] | None = None,
        age_range: tuple[float, float] = AGE_RANGE,
    ) -> pd.DataFrame:
        """Draw ``n`` controls (and ``patients`` patients) as a data frame.

        Columns: ``sub_id``, ``age``, ``sex`` (0/1), ``site`` (when the truth has sites), ``group``
        (``control``/``patient``) and one column per IDP. Patients have ``patient_shift`` added to the
        latent z of ``patient_idps`` (default: every fifth IDP starting with the third), so their true
        deviation on those IDPs is shifted by exactly that many z units.
        """
        rng = np.random.default_rng(seed)
        total = n + patients
        age = rng.uniform(age_range[0], age_range[1], total).round(2)
        sex = rng.integers(0, 2, total)
        site = rng.choice(self.site_names, total) if self.n_sites else None
        load = self._loadings(age)
        f = rng.standard_normal((total, 2))
        common = np.einsum("ndk,nk->nd", load, f)
        resid = np.sqrt(np.clip(1.0 - (load**2).sum(-1), 1e-6, None))
        e = common + resid * rng.standard_normal((total, self.d))
        group = np.array(["control"] * n + ["patient"] * patients)
        if patients:
            idx = self.default_patient_idps() if patient_idps is None else list(patient_idps)
            e[n:, idx] += patient_shift
        cols: dict[str, np.ndarray] = {
            "sub_id": np.array([f"sub-{i + 1:05d}" for i in range(total)]),
            "age": age,
            "sex": sex,
        }
        if site is not None:
            cols["site"] = site
        cols["group"] = group
        for j, name in enumerate(self.idp_names):
            shift, site_scale = self._site_effects(site, j, total)
            y = (self.location(age, sex, j) + shift
                 + self.spread(age, j) * site_scale * self._deviate(e[:, j], age, j))
            cols[name] = y
        df = pd.DataFrame(cols)
        order = rng.permutation(total)
        return df.iloc[order].reset_index(drop=True)

    def default_patient_idps(self) -> list[int]:
        """IDPs shifted in patients by default: every fifth IDP starting with the third."""
        return list(range(2, self.d, 5)) or [0]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"kind": "normcore-synthetic-truth", "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> SyntheticTruth:
        if data.get("kind") != "normcore-synthetic-truth":
            raise ValueError("not a normcore synthetic truth file")
        fields = {k: v for k, v in data.items() if k not in ("kind", "version")}
        return cls(**fields)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> SyntheticTruth:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _mixture_cdf(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    lo = special.ndtr((v + _MIX_OFFSET) / _MIX_SD)
    hi = special.ndtr((v - _MIX_OFFSET) / _MIX_SD)
    return (1.0 - w) * lo + w * hi


def _mixture_quantile(q: np.ndarray, w: np.ndarray, iters: int = 60) -> np.ndarray:
    """Vectorised bisection for the quantile of the standardised two-component mixture."""
    q, w = np.broadcast_arrays(np.asarray(q, float), np.asarray(w, float))
    lo = np.full(q.shape, -_MIX_OFFSET - 12 * _MIX_SD)
    hi = np.full(q.shape, _MIX_OFFSET + 12 * _MIX_SD)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = _mixture_cdf(mid, w) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def make_synthetic(
    n: int,
    d: int = 10,
    patients: int = 0,
    n_sites: int = 0,
    seed: int = 0,
    patient_shift: float = 1.5,
) -> tuple[pd.DataFrame, SyntheticTruth]:
    """Convenience wrapper: a truth drawn from ``seed`` and a cohort of ``n`` controls from it."""
    truth = SyntheticTruth.create(d=d, n_sites=n_sites, seed=seed)
    df = truth.sample(n, seed=seed + 1, patients=patients, patient_shift=patient_shift)
    return df, truth


"""Covariate encoding, fitted on training data only.

:class:`CovariateEncoder`: standardised age plus one-hot categorical covariates (less any batch covariates, which
the location-scale stage alone models). Categorical values are carried as integer codes; code ``MARGINALISE``
(-1) means "marginalise": the value is drawn per sample from the training distribution of that covariate (used for
centile curves with an unfixed covariate and, when the model allows it, for categories unseen in training).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normcore._utils.errors import InputError, column_not_found, table_row
from normcore._utils.plausibility import check_ages

MARGINALISE = -1


class CovariateEncoder:
    """Encode an age column and categorical covariates into a conditioning matrix.

    Every categorical covariate gets integer codes (:meth:`codes`); the conditioning matrix (:meth:`encode`) holds
    the ``network_covariates`` only: those not named in ``batch``. A batch covariate (a site, a scanner) is a
    shift, a scale and an age curve per level in the location-scale stage (:class:`LocationScale`'s ``curves``) and
    no input of the network, so the network's residual shape is shared by its levels.
    """

    def __init__(self, age: str, categorical: list[str], batch: list[str] | tuple[str, ...] = ()):
        self.age = age
        self.categorical = list(categorical)
        unknown = [c for c in batch if c not in self.categorical]
        if unknown:
            raise InputError(f"batch covariate(s) {unknown} must be among the categorical covariates "
                             f"{self.categorical}")
        self.batch = [c for c in self.categorical if c in batch]
        self.age_mean = 0.0
        self.age_std = 1.0
        self.age_min = 0.0
        self.age_max = 0.0
        self.levels: dict[str, list[str]] = {}
        self.frequencies: dict[str, list[float]] = {}
        self.trained_levels: dict[str, int] = {}  # levels the network was trained on (later ones: adapted)
        # network inputs fitted for adapted levels (col -> level label -> weights over the trained levels)
        self.embeddings: dict[str, dict[str, list[float]]] = {}

    @property
    def network_covariates(self) -> list[str]:
        """The categorical covariates the network is conditioned on (all but the batch covariates)."""
        return [c for c in self.categorical if c not in self.batch]

    @property
    def batch_columns(self) -> list[int]:
        """Positions of the batch covariates among the columns of :meth:`codes`."""
        return [k for k, c in enumerate(self.categorical) if c in self.batch]

    @property
    def dim(self) -> int:
        return 1 + sum(self.trained_levels[c] for c in self.network_covariates)

    def adapted_mask(self, codes: np.ndarray) -> np.ndarray:
        """(n, K) True where a code is a level added by adaptation that has no fitted network input: the
        network cannot be conditioned on it (it gets training levels instead). Batch covariates are never
        network inputs, so their columns are False."""
        out = np.zeros(codes.shape, bool)
        for k, col in enumerate(self.categorical):
            if not codes.size:
                break
            if col in self.batch:
                continue
            out[:, k] = codes[:, k] >= self.trained_levels[col]
            for label in self.embeddings.get(col, {}):
                out[:, k] &= codes[:, k] != self.levels[col].index(label)
        return out

    def block(self, col: str) -> slice:
        """The columns of ``col``'s one-hot block in the conditioning matrix of :meth:`encode` (a network
        covariate)."""
        network = self.network_covariates
        if col not in network:
            raise ValueError(f"{col} is not an input of the network (network covariates: {network})")
        start = 1 + sum(self.trained_levels[c] for c in network[:network.index(col)])
        return slice(start, start + self.trained_levels[col])

    def set_embedding(self, col: str, label: str, weights: np.ndarray) -> None:
        """Give adapted level ``label`` of ``col`` a network input: non-negative weights over the trained
        levels summing to one (its one-hot block becomes this mixture of the trained levels' inputs)."""
        weights = np.asarray(weights, float)
        n_tr = self.trained_levels[col]
        if weights.shape != (n_tr,) or (weights < 0).any() or not np.isclose(weights.sum(), 1, atol=1e-4):
            raise ValueError(f"an embedding of {col} needs {n_tr} non-negative weights summing to 1")
        self.embeddings.setdefault(col, {})[category_label(label)] = [round(float(w), 6) for w in weights]

    def add_level(self, col: str, label: str) -> int:
        """Append an adapted level (training frequency 0: marginals stay over the training levels)."""
        self.levels[col].append(category_label(label))
        self.frequencies[col].append(0.0)
        return len(self.levels[col]) - 1

    def fit(self, df: pd.DataFrame) -> CovariateEncoder:
        age = df[self.age].to_numpy(dtype=float)
        self.age_mean, self.age_std = float(age.mean()), float(age.std() or 1.0)
        self.age_min, self.age_max = float(age.min()), float(age.max())
        for col in self.categorical:
            counts = df[col].map(category_label).value_counts().sort_index()
            self.levels[col] = counts.index.tolist()
            self.frequencies[col] = (counts / counts.sum()).round(6).tolist()
            self.trained_levels[col] = len(self.levels[col])
        return self

    def codes(self, df: pd.DataFrame, allow_unseen: bool = False, label: str = "table") -> np.ndarray:
        """(n, K) integer level codes; unseen levels raise unless ``allow_unseen`` (then marginalised)."""
        out = np.empty((len(df), len(self.categorical)), dtype=np.int64)
        for k, col in enumerate(self.categorical):
            if col not in df.columns:
                raise column_not_found(label, "covariate", col, df.columns)
            lookup = {lvl: i for i, lvl in enumerate(self.levels[col])}
            values = df[col].map(category_label)
            codes = values.map(lookup)
            unseen = codes.isna()
            if unseen.any() and not allow_unseen:
                raise self._unseen_levels_error(col, df[col], values, unseen.to_numpy(), label)
            out[:, k] = codes.fillna(MARGINALISE).to_numpy(dtype=np.int64)
        return out

    def _unseen_levels_error(self, col: str, raw: pd.Series, values: pd.Series, unseen: np.ndarray,
                             label: str) -> InputError:
        """The error for rows whose ``col`` is no training level, saying which of four cases it looks like: empty
        cells; known levels in another case ('f' for 'F'); the whole column in another coding of as many levels
        ('F'/'M' for '0'/'1'); or new levels (a new site: refit, adapt, or marginalise)."""
        known = self.levels[col]
        empty = raw.isna().to_numpy() & unseen
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            return InputError(f"{label}: column {col!r} is empty in {int(empty.sum())} row(s), the first in "
                              f"{table_row(raw.index[row], row)}; give every row its value, or allow unseen levels "
                              "(`--allow-unseen`, `allow_unseen=True`) to marginalise over the training levels")
        bad = sorted(values[unseen].unique().tolist())[:5]
        folded = {str(lvl).casefold(): lvl for lvl in known}
        alike = [f"{b!r} for {folded[str(b).casefold()]!r}" for b in bad if str(b).casefold() in folded]
        if alike:  # a spelling, not a new site: say so instead of the ways to handle new levels
            return InputError(f"{label}: column {col!r} has value(s) {bad} not seen in training (known: {known[:10]}); "
                              "levels are compared exactly, and these differ from known ones only in case "
                              f"({', '.join(alike)}): recode them as the training table wrote them")
        held = values.unique()
        if unseen.all() and len(held) == len(known) > 1:  # as many levels, none shared: another coding
            return InputError(f"{label}: column {col!r} holds {sorted(held.tolist())[:10]} and the model knows "
                              f"{known[:10]}, none of them: the column seems coded otherwise than in training; recode "
                              "it as the training table did (the model card's levels)")
        return InputError(f"{label}: column {col!r} has value(s) {bad} not seen in training (known: {known[:10]}); "
                          "refit including them, adapt the model to them from a few of their healthy controls "
                          "(`python -m normcore adapt`, or the dashboard's Cohort page), or allow unseen levels "
                          "(`--allow-unseen`, `allow_unseen=True`) to marginalise over the training distribution")

    def ages(self, df: pd.DataFrame, label: str = "table") -> np.ndarray:
        if self.age not in df.columns:
            raise column_not_found(label, "age", self.age, df.columns)
        age = pd.to_numeric(df[self.age], errors="coerce").to_numpy(dtype=float)
        if np.isnan(age).any():
            row = int(np.flatnonzero(np.isnan(age))[0])
            value = df[self.age].iloc[row]
            shown = "" if pd.isna(value) else f" ({str(value)[:40]!r})"
            raise InputError(f"{label}: column {self.age!r} has a missing or non-numeric value{shown} in "
                             f"{table_row(df.index[row], row)}")
        check_ages(age, f"{label}: column {self.age!r}", df.index)
        return age

    def out_of_range(self, age: np.ndarray) -> np.ndarray:
        return (age < self.age_min) | (age > self.age_max)

    def resolve_marginalised(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Replace ``MARGINALISE`` codes by levels drawn from the training frequencies."""
        codes = codes.copy()
        for k, col in enumerate(self.categorical):
            free = codes[:, k] == MARGINALISE
            if free.any():
                p = np.asarray(self.frequencies[col], float)
                codes[free, k] = rng.choice(len(p), size=int(free.sum()), p=p / p.sum())
        return codes

    def encode(self, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Conditioning matrix (n, dim): standardised age then one-hot blocks over the trained levels of the
        network covariates (their codes must be trained levels or adapted levels with an embedding, which fills
        their block; batch covariates' codes are not read)."""
        parts = [((np.asarray(age, float) - self.age_mean) / self.age_std)[:, None]]
        for k, col in enumerate(self.categorical):
            if col in self.batch:
                continue
            n_tr = self.trained_levels[col]
            table = np.eye(n_tr)
            extra = self.embeddings.get(col, {})
            if extra:
                table = np.zeros((len(self.levels[col]), n_tr))
                table[:n_tr] = np.eye(n_tr)
                for label, weights in extra.items():
                    table[self.levels[col].index(label)] = weights
            if codes.size and ((codes[:, k] < 0) | (codes[:, k] >= len(table))).any():
                raise ValueError(f"{col}: codes must be resolved to levels the network can be conditioned on")
            parts.append(table[codes[:, k]] if len(age) else np.zeros((0, n_tr)))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def to_dict(self) -> dict:
        return {"age": self.age, "categorical": self.categorical, "age_mean": self.age_mean,
                "age_std": self.age_std, "age_min": self.age_min, "age_max": self.age_max,
                "levels": self.levels, "frequencies": self.frequencies, "trained_levels": self.trained_levels,
                **({"batch": self.batch} if self.batch else {}),
                **({"embeddings": self.embeddings} if self.embeddings else {})}

    @classmethod
    def from_dict(cls, data: dict) -> CovariateEncoder:
        enc = cls(data["age"], data["categorical"], data.get("batch") or ())
        for key in ("age_mean", "age_std", "age_min", "age_max"):
            setattr(enc, key, float(data[key]))
        enc.levels = {k: [str(x) for x in v] for k, v in data["levels"].items()}
        enc.frequencies = {k: [float(x) for x in v] for k, v in data["frequencies"].items()}
        trained = data.get("trained_levels") or {}  # cards before adaptation existed: every level trained
        enc.trained_levels = {k: int(trained.get(k, len(v))) for k, v in enc.levels.items()}
        for col, table in (data.get("embeddings") or {}).items():
            for label, weights in table.items():
                enc.set_embedding(col, label, np.asarray(weights, float))
        return enc


def expand_levels(codes: np.ndarray, frequencies: list, free) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows' level codes (n, K) as (resolved codes, weight (n,)) pairs whose weighted sum is, for each row, the
    mixture over the levels of every covariate it leaves free: ``free(k, column)`` marks the rows whose covariate k
    is free, and they are expanded over its levels with weights ``frequencies[k]`` (summing to 1). Each row's
    weights sum to 1 (a row not free at k is carried unchanged into every expansion of another row)."""
    combos = [(np.asarray(codes).copy(), np.ones(len(codes)))]
    for k, freqs in enumerate(frequencies):
        expanded = []
        for c, w in combos:
            rows = free(k, c[:, k])
            if not rows.any():
                expanded.append((c, w))
                continue
            for level, f in enumerate(freqs):
                resolved = c.copy()
                resolved[rows, k] = level
                expanded.append((resolved, np.where(rows, w * f, w)))
        combos = expanded
    total = sum(w for _, w in combos)
    return [(c, w / total) for c, w in combos]


def level_effects(codes: np.ndarray, n_levels: int) -> np.ndarray:
    """(n, n_levels - 1) one-hot columns of a covariate's level codes, level 0 the reference (no column)."""
    out = np.zeros((len(codes), max(n_levels - 1, 0)))
    rows = np.flatnonzero(codes > 0)
    out[rows, codes[rows] - 1] = 1.0
    return out


def category_label(value) -> str:
    """Canonical string of a categorical value: 1, 1.0 and "1" are the same level."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()

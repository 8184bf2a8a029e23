"""The tabular model protocol: what every normative model of IDPs shares, and what each must provide.

In the spirit of scikit-learn's estimators: constructor arguments are the parameters (read from the
``__init__`` signature by :meth:`get_params`, changed by :meth:`set_params`), fitted state lives in
attributes ending in ``_``, and one contract suite (``tests/tabular/test_contract.py``) runs over every
model type. The base class owns the covariate handling, the input checks, the frame formats of
``score`` / ``centiles`` / ``sample`` and the model folder with its versioned card; a model provides
its core:

- ``_fit_core(data, age, covariates, label, progress)`` on the validated complete rows;
- ``_score_core(y, age, codes, n_samples, seed, progress)`` -> centiles (n, D) in (0, 1), z or None,
  beyond-samples mask (n, D), correlation of the normal scores (n, D, D);
- ``_quantile_core(ages, codes, quantiles, n_samples, seed, progress)`` -> values (Q, G, D);
- ``_sample_core(age, codes, n, seed, progress)`` -> values (rows, n, D);
- ``predict_moments(df, n_samples=None, seed=None)`` -> predictive mean and variance (n, D);
- for persistence, ``_state()`` -> (tensors, card entries) and ``_restore(tensors, card)``.

Codes of categorical covariates are integers into the training levels; ``MARGINALISE`` (-1) marks a
covariate to integrate over the training levels (left free in ``centiles``, or unseen with
``allow_unseen``).
"""

from __future__ import annotations

import inspect
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import special

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore._version import __version__
from normcore.persistence import Migration, load_model_dir, save_model_dir
from normcore.tabular.preprocessing import MARGINALISE, CovariateEncoder, category_label
from normcore.tabular.scoring import assemble_scores, mahalanobis
from normcore.tabular.validation import prepare_training_table

DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class NotFittedError(RuntimeError):
    """A fitted-model method was called before ``fit`` or ``load``."""


class NormativeModel:
    """Base class of every tabular normative model (see the module docstring for the contract)."""

    MODEL_TYPE: ClassVar[str] = ""  # the registry name (diffusion models: their backbone)
    FORMAT: ClassVar[str | None] = None  # card format tag; None: the model cannot be saved
    FORMAT_VERSION: ClassVar[int] = 1
    MIGRATIONS: ClassVar[dict[int, Migration]] = {}
    EXACT: ClassVar[bool] = False  # centiles from a closed form (True) or from samples
    _FITTED_MARK: ClassVar[str] = "encoder_"  # the attribute whose presence means fitted

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict:
        """The constructor arguments, as given (scikit-learn convention)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> NormativeModel:
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise InputError(f"{type(self).__name__}: unknown parameter(s) {unknown}; known: {self._param_names()}")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @property
    def model_type(self) -> str:
        """The name this model type has in the registry and on the command line."""
        return self.MODEL_TYPE

    # ------------------------------------------------------------------ fitted state, public
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, self._FITTED_MARK)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() or load()")

    @property
    def idps_(self) -> list[str]:
        """The modelled IDP columns, in model order."""
        self._check_fitted()
        return self.idps

    @property
    def age_(self) -> str:
        """The age column's name."""
        self._check_fitted()
        return self.encoder_.age

    @property
    def covariates_(self) -> list[str]:
        """The categorical covariate columns (e.g. sex, site)."""
        self._check_fitted()
        return list(self.encoder_.categorical)

    @property
    def levels_(self) -> dict[str, list[str]]:
        """Training levels of each categorical covariate (as labels)."""
        self._check_fitted()
        return {c: list(self.encoder_.levels[c]) for c in self.encoder_.categorical}

    @property
    def age_range_(self) -> tuple[float, float]:
        """The training age range; scores outside it are flagged ``out_of_range``."""
        self._check_fitted()
        return float(self.encoder_.age_min), float(self.encoder_.age_max)

    @property
    def required_columns_(self) -> list[str]:
        """Columns a table must have to be scored: age, categorical covariates, IDPs."""
        return [self.age_, *self.covariates_, *self.idps_]

    # ------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame, age: str = "age", covariates: list[str] | tuple[str, ...] = (),
            idps: list[str] | None = None, idps_regex: str | None = None, progress: Progress | None = None,
            label: str = "training data") -> NormativeModel:
        """Fit on a data frame of healthy controls.

        IDPs default to every numeric column other than age and covariates. Constant (e.g. all-zero) IDP
        columns and rows with missing values are dropped; both are recorded in ``fit_warnings_`` and the card.
        """
        covariates = list(covariates)
        data, used, warnings = prepare_training_table(df, age, covariates, idps, idps_regex, label)
        self.idps, self.fit_warnings_ = used, warnings
        self._fit_core(data, age, covariates, label, as_progress(progress), dropped_rows=len(df) - len(data))
        return self

    def _fit_core(self, data: pd.DataFrame, age: str, covariates: list[str], label: str, progress: Progress,
                  dropped_rows: int) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ inputs
    def _covariates_of(self, df: pd.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Ages and level codes of a table's rows (unseen levels: an error unless ``allow_unseen``)."""
        return (self.encoder_.ages(df, label),
                self.encoder_.codes(df, allow_unseen=getattr(self, "allow_unseen", False), label=label))

    def _idp_values(self, df: pd.DataFrame, label: str) -> np.ndarray:
        """(n, D) IDP values in model order; NaN where missing; non-numeric values are an error."""
        missing = [c for c in self.idps if c not in df.columns]
        if missing:
            raise InputError(f"{label}: IDP column(s) missing: {', '.join(missing[:5])}")
        y = df[self.idps].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        bad = np.isnan(y) & df[self.idps].notna().to_numpy()
        if bad.any():
            col = self.idps[int(np.flatnonzero(bad.any(axis=0))[0])]
            raise InputError(f"{label}: column {col!r} has non-numeric values")
        return y

    def _fixed_codes(self, fixed: dict, n: int) -> np.ndarray:
        """Level codes (n, K) with ``fixed`` covariates set and the others marginalised."""
        unknown = [k for k in fixed if k not in self.encoder_.categorical]
        if unknown:
            raise InputError(f"cannot fix {unknown}: the model's categorical covariates are "
                             f"{self.encoder_.categorical}")
        codes = np.full((n, len(self.encoder_.categorical)), MARGINALISE, dtype=np.int64)
        for k, col in enumerate(self.encoder_.categorical):
            if col in fixed:
                levels = self.encoder_.levels[col]
                label = category_label(fixed[col])
                if label not in levels:
                    raise InputError(f"cannot fix {col}={fixed[col]}: level not seen in training "
                                     f"(known: {levels[:10]})")
                codes[:, k] = levels.index(label)
        return codes

    # ------------------------------------------------------------------ public API
    def score(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
              progress: Progress | None = None, label: str = "table") -> pd.DataFrame:
        """Centiles and deviation scores of every row of ``df`` against the model.

        Returns ``df`` with, for each IDP, ``z:<IDP>`` and ``centile:<IDP>`` (in 0..1), then
        ``multivariate_d2``, ``multivariate_z``, ``n_beyond_samples`` and ``out_of_range`` (age outside
        the training range: scored, but extrapolated). Missing IDP values give missing scores.
        """
        self._check_fitted()
        y = self._idp_values(df, label)
        age, codes = self._covariates_of(df, label)
        centile, z, beyond, corr = self._score_core(y, age, codes, n_samples, seed, as_progress(progress))
        missing = np.isnan(y)
        centile[missing] = np.nan
        beyond[missing] = False
        z = special.ndtri(centile) if z is None else z
        z[missing] = np.nan
        d2, mz = mahalanobis(z, corr)
        return assemble_scores(df, self.idps, z, centile, d2, mz, beyond, self.encoder_.out_of_range(age))

    def centiles(self, ages: np.ndarray | list[float], quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
                 fixed: dict | None = None, n_samples: int | None = None, idps: list[str] | None = None,
                 seed: int | None = None, progress: Progress | None = None) -> pd.DataFrame:
        """Centile curves of every IDP on an age grid.

        ``fixed`` maps categorical covariates to levels; covariates not fixed are marginalised over their
        training distribution. Returns long format: ``age``, the fixed covariates, ``idp``, ``quantile``,
        ``value``, sorted by IDP, quantile and age.
        """
        self._check_fitted()
        fixed = dict(fixed or {})
        q = np.asarray(quantiles, float)
        if q.size == 0 or (q <= 0).any() or (q >= 1).any():
            raise InputError("quantiles must lie strictly between 0 and 1")
        ages = np.asarray(ages, float)
        codes = self._fixed_codes(fixed, len(ages))
        names = list(idps or self.idps)
        unknown = [n for n in names if n not in self.idps]
        if unknown:
            raise InputError(f"unknown IDP(s) {unknown[:5]}")
        values = self._quantile_core(ages, codes, q, n_samples, seed, as_progress(progress))  # (Q, G, D)
        frames = []
        for qi, qv in enumerate(q):
            for name in names:
                frame = {"age": ages, **{k: [v] * len(ages) for k, v in fixed.items()}}
                frame.update(idp=name, quantile=qv, value=values[qi][:, self.idps.index(name)])
                frames.append(pd.DataFrame(frame))
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values(["idp", "quantile", "age"], kind="stable").reset_index(drop=True)

    def sample(self, covariates: pd.DataFrame, n: int = 1, seed: int | None = None,
               progress: Progress | None = None) -> pd.DataFrame:
        """Draw ``n`` synthetic IDP vectors for every row of ``covariates``.

        Returns a long frame: the covariate columns, ``sample`` (0..n-1) and one column per IDP.
        """
        self._check_fitted()
        age, codes = self._covariates_of(covariates, "covariates")
        values = np.asarray(self._sample_core(age, codes, n, seed, as_progress(progress))).reshape(-1, len(self.idps))
        cols = [self.encoder_.age, *self.encoder_.categorical]
        base = covariates[cols].loc[covariates.index.repeat(n)].reset_index(drop=True)
        base.insert(len(cols), "sample", np.tile(np.arange(n), len(covariates)))
        return pd.concat([base, pd.DataFrame(values, columns=self.idps)], axis=1)

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None,
                        seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and variance (n, D) at each row's covariates (for EXPV, SMSE, MSLL)."""
        raise NotImplementedError

    def _score_core(self, y, age, codes, n_samples, seed, progress):
        raise NotImplementedError

    def _quantile_core(self, ages, codes, quantiles, n_samples, seed, progress) -> np.ndarray:
        raise NotImplementedError

    def _sample_core(self, age, codes, n, seed, progress) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ persistence
    def card(self) -> dict:
        """The model card: everything but the weights, as JSON-serialisable data."""
        self._check_fitted()
        _, entries = self._state()
        return self._card(entries)

    def _card(self, entries: dict) -> dict:
        return {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, "model_type": self.model_type,
                "created": datetime.now(UTC).isoformat(timespec="seconds"), "params": self.get_params(),
                "idps": self.idps,
                "covariates": {"age": self.encoder_.age, "categorical": self.encoder_.categorical},
                "encoder": self.encoder_.to_dict(), **entries,
                "training_data": self.training_summary_, "training": dict(self.history_),
                "fit_warnings": list(getattr(self, "fit_warnings_", [])),
                "versions": {"normcore": __version__, "torch": torch.__version__,
                             "python": platform.python_version(), **self._versions()}}

    def _versions(self) -> dict:
        return {}

    def save(self, path: str | Path) -> Path:
        """Save weights (safetensors) and card (JSON) into folder ``path`` atomically."""
        self._check_fitted()
        if self.FORMAT is None:
            raise InputError(f"{type(self).__name__} models are not saved by normcore (only models with a "
                             "safetensors + JSON format are); refit, or use a model type that saves")
        tensors, entries = self._state()
        return save_model_dir(path, tensors, self._card(entries))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> NormativeModel:
        """Load a saved model folder; nothing in it is executed. Older cards are migrated on the way."""
        if cls.FORMAT is None:
            raise InputError(f"{cls.__name__} models are not saved by normcore, so none can be loaded")
        tensors, card = load_model_dir(path, cls.FORMAT, cls.FORMAT_VERSION, cls.MIGRATIONS)
        try:
            params = {k: v for k, v in card["params"].items() if k in cls._param_names()}
            if device is not None and "device" in params:
                params["device"] = device
            model = cls(**params)
            model.idps = list(card["idps"])
            model.encoder_ = CovariateEncoder.from_dict(card["encoder"])
            model.history_ = card.get("training", {})
            model.training_summary_ = card.get("training_data", {})
            model.fit_warnings_ = card.get("fit_warnings", [])
            model._restore(tensors, card, str(path))
        except (KeyError, TypeError) as exc:
            raise InputError(f"{path}: the model card is incomplete or malformed ({type(exc).__name__}: {exc})") \
                from None
        return model

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        raise NotImplementedError

    def _restore(self, tensors: dict[str, torch.Tensor], card: dict, path: str) -> None:
        raise NotImplementedError

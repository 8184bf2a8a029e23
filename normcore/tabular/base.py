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
- ``predict_moments(df, n_samples=None, seed=None, progress=None)`` -> predictive mean and variance (n, D);
  ``predict_mixture`` (same arguments) -> a :class:`~normcore.tabular.predictive_mixture.PredictiveMixture`
  (shares at the bounds, the body's moments), by default ``predict_moments`` with no bounds; a model with point
  masses provides its own;
- for persistence, ``_state()`` -> (tensors, card entries) and ``_restore(tensors, card)``.

Codes of categorical covariates are integers into the training levels; ``MARGINALISE`` (-1) marks a
covariate to integrate over the training levels (left free in ``centiles``, or unseen with
``allow_unseen``).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import special

from normcore._utils.device import resolve_device
from normcore._utils.errors import InputError, table_row
from normcore._utils.plausibility import check_ages
from normcore._utils.progress import Progress, as_progress
from normcore._version import __version__
from normcore.persistence import Migration, load_model_dir, save_model_dir
from normcore.tabular.column_matching import match_columns
from normcore.tabular.covariates import MARGINALISE, CovariateEncoder, category_label
from normcore.tabular.multivariate_calibration import MultivariateCalibration
from normcore.tabular.params import Rule, check_count, check_params, check_seed, checked_quantiles
from normcore.tabular.point_masses import at_bounds, beyond_bounds_notes, bodies_without_spread
from normcore.tabular.predictive_mixture import PredictiveMixture
from normcore.tabular.scoring import MAX_MULTIVARIATE_IDPS, assemble_scores, far_off_notes, multivariate_scores
from normcore.tabular.validation import prepare_training_table

DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MIN_CONTROLS_PER_LEVEL = 5
WARN_CONTROLS_PER_SEX = 10
SEX_NAMES = ("sex", "gender")
NETWORK_INPUTS = ("marginal", "embedding")  # what a network is conditioned on for an adapted level


def _respelled_hint(columns, idps: list[str]) -> str:
    """``; the table has them spelled otherwise (e.g. 'VOL' for 'vol'): ...`` where the table's columns match the
    model's IDPs by :func:`~normcore.tabular.column_matching.match_columns` (case, punctuation, a measure word), or
    "". Nothing is renamed here: which column holds which measure is the user's to confirm."""
    found = match_columns([str(c) for c in columns], idps)
    if not found:
        return ""
    pairs = ", ".join(f"{found[c]!r} for {c!r}" for c in list(found)[:3])
    return (f"; the table has {len(found)} of them spelled otherwise (e.g. {pairs}): rename its columns, or "
            "match them on the dashboard's Cohort page")


class NotFittedError(RuntimeError):
    """A fitted-model method was called before ``fit`` or ``load``."""


class NormativeModel:
    """Base class of every tabular normative model (see the module docstring for the contract)."""

    MODEL_TYPE: ClassVar[str] = ""  # the registry name (diffusion models: their backbone)
    FORMAT: ClassVar[str | None] = None  # card format tag; None: the model cannot be saved
    FORMAT_VERSION: ClassVar[int] = 1
    MIGRATIONS: ClassVar[dict[int, Migration]] = {}
    EXACT: ClassVar[bool] = False  # centiles from a closed form (True) or from samples
    FITS_INCOMPLETE_ROWS: ClassVar[bool] = False  # trains on rows missing some IDP values (else drops them)
    PARAM_RULES: ClassVar[dict[str, Rule]] = {}  # accepted values of each parameter (normcore.tabular.params)
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

    def check_params(self) -> NormativeModel:
        """Raise :class:`InputError` naming the first parameter outside its accepted range; called before any
        work by fit, load, score, centiles, sample and adapt."""
        check_params(type(self).__name__, self.get_params(), self.PARAM_RULES)
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
    def point_masses_(self) -> list[tuple[str, str, float, float]]:
        """(IDP, ``"floor"`` or ``"ceiling"``, value, share of the training values there) of every point mass the
        model sets apart (:mod:`~normcore.tabular.point_masses`); none for models that do not."""
        self._check_fitted()
        if not self._has_bounds():
            return []
        shares = self._bound_shares()
        return [(name, kind, float(bound), float(share))
                for name, lo, hi, (p_lo, p_hi) in zip(self.idps, *self._bounds(), shares, strict=True)
                for kind, bound, share in (("floor", lo, p_lo), ("ceiling", hi, p_hi)) if share > 0]

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
        columns and rows missing age or a covariate are dropped; so are rows missing an IDP value unless the model
        ``FITS_INCOMPLETE_ROWS`` (see :func:`~normcore.tabular.validation.prepare_training_table`). What was dropped
        is recorded in ``fit_warnings_`` and the card, with the point masses whose other values give no spread, which
        is then assumed (:func:`~normcore.tabular.point_masses.bodies_without_spread`).
        """
        self.check_params()
        covariates = list(covariates)
        data, used, warnings = prepare_training_table(df, age, covariates, idps, idps_regex, label,
                                                      keep_incomplete=self.FITS_INCOMPLETE_ROWS)
        self.idps, self.fit_warnings_ = used, warnings + bodies_without_spread(data[used].to_numpy(float), used)
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
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            row = int(np.flatnonzero(bad[:, j])[0])
            value = str(df[self.idps[j]].iloc[row])[:40]
            raise InputError(f"{label}: column {self.idps[j]!r} has non-numeric values, the first {value!r} in "
                             f"{table_row(df.index[row], row)}")
        if np.isinf(y).any():
            row, j = (int(v[0]) for v in np.nonzero(np.isinf(y)))
            raise InputError(f"{label}: column {self.idps[j]!r} has an infinite value in "
                             f"{table_row(df.index[row], row)}")
        return y

    def _check_call(self, n_samples: int | None, seed: int | None) -> None:
        """The parameters and call options are in range (before any work)."""
        self.check_params()
        check_count(n_samples, "n_samples")
        check_seed(seed)

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
        the training range: scored, but extrapolated). Missing IDP values give missing scores. A table
        may hold any subset of the model's IDPs: z/centile columns are written for those present, and the
        multivariate score uses those present (its degrees of freedom are their number). ``multivariate_z`` puts
        ``multivariate_d2`` on a z scale through chi2 (under the model), or through the model's
        ``multivariate_calibration_`` where the fit made one (:mod:`~normcore.tabular.multivariate_calibration`).
        """
        self._check_fitted()
        self._check_call(n_samples, seed)
        present = [c for c in self.idps if c in df.columns]
        if not present:
            raise InputError(f"{label}: none of the model's {len(self.idps)} IDP columns is present "
                             f"(e.g. {', '.join(self.idps[:3])}){_respelled_hint(df.columns, self.idps)}")
        y = self._idp_values(df.reindex(columns=self.idps), label)  # absent IDPs: NaN (one block, not a column each)
        age, codes = self._covariates_of(df, label)
        centile, z, beyond, corr = self._score_core(y, age, codes, n_samples, seed, as_progress(progress))
        missing = np.isnan(y)
        centile[missing] = np.nan
        beyond[missing] = False
        z = special.ndtri(centile) if z is None else z
        z[missing] = np.nan
        keep = np.array([c in df.columns for c in self.idps])
        d2, mz = multivariate_scores(z, corr, keep)
        calibration = getattr(self, "multivariate_calibration_", None)
        if calibration is not None:  # a z among new healthy people rather than under the model
            mz = calibration.z(d2, (~np.isnan(z[:, keep])).sum(axis=1), n_samples or getattr(self, "n_samples", None))
        out = assemble_scores(df, present, z[:, keep], centile[:, keep], d2, mz, beyond[:, keep],
                              self.encoder_.out_of_range(age))
        note = getattr(corr, "note", None)
        if note is None and keep.sum() > MAX_MULTIVARIATE_IDPS:
            note = (f"no multivariate score: {int(keep.sum())} IDPs is over the {MAX_MULTIVARIATE_IDPS} for which "
                    "it is computed")
        notes = [note] if note else []
        notes += self._unmeasured_notes(df, y)
        notes += beyond_bounds_notes(present, y[:, keep], *(b[keep] for b in self._bounds()))
        notes += far_off_notes(present, z[:, keep], y[:, keep], (getattr(self, "training_summary_", None) or {})
                               .get("idp_mean", {}))
        out.attrs["notes"] = out.attrs.get("notes", []) + notes
        return out

    def _unmeasured_idps(self, col: str, level: str) -> list[str]:
        """IDPs no training row of ``col`` = ``level`` had a value of (``training_summary_["unmeasured_levels"]``),
        less those an adaptation has since estimated from that level's controls (``newly_measured``)."""
        summary = getattr(self, "training_summary_", None) or {}
        names = summary.get("unmeasured_levels", {}).get(col, {}).get(level, [])
        measured = {c for entry in getattr(self, "adaptation_", []) for rec in entry.get("levels", [])
                    if rec.get("covariate") == col and rec.get("level") == level for c in rec.get("newly_measured", [])}
        return [c for c in names if c not in measured]

    def _unmeasured_notes(self, df: pd.DataFrame, y: np.ndarray) -> list[str]:
        """One note per covariate level of the scored rows that had no training value of some IDP the rows have
        (:meth:`_unmeasured_idps`): their scores on it use the mean effect of the other levels."""
        notes = []
        unmeasured = (getattr(self, "training_summary_", None) or {}).get("unmeasured_levels", {})
        for col, levels in unmeasured.items():
            if col not in df.columns:
                continue
            labels = df[col].map(category_label).to_numpy()
            for level in levels:
                cols = [self.idps.index(c) for c in self._unmeasured_idps(col, level) if c in self.idps]
                rows = labels == level
                scored = [self.idps[j] for j in cols if (~np.isnan(y[rows, j])).any()]
                if scored:
                    notes.append(f"{col} {level!r} had no training value of {len(scored)} IDP(s) its subjects have "
                                 f"here (e.g. {', '.join(scored[:3])}): their scores on them use the mean of the other "
                                 f"{col} levels' effects; adapting the model to healthy controls of {level!r} "
                                 f"(adapt --refine {col}) calibrates them")
        return notes

    def centiles(self, ages: np.ndarray | list[float], quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
                 fixed: dict | None = None, n_samples: int | None = None, idps: list[str] | None = None,
                 seed: int | None = None, progress: Progress | None = None) -> pd.DataFrame:
        """Centile curves of every IDP on an age grid.

        ``fixed`` maps categorical covariates to levels; covariates not fixed are marginalised over their
        training distribution. Returns long format: ``age``, the fixed covariates, ``idp``, ``quantile``,
        ``value``, sorted by IDP, quantile and age.
        """
        self._check_fitted()
        self._check_call(n_samples, seed)
        fixed = dict(fixed or {})
        q = checked_quantiles(quantiles)
        ages = np.asarray(ages, float)
        if ages.ndim != 1 or not ages.size:
            raise InputError("ages must be a non-empty list of numbers")
        check_ages(ages, "age grid")
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

    def predict_quantiles(self, df: pd.DataFrame, quantiles: tuple[float, ...], n_samples: int | None = None,
                          seed: int | None = None, progress: Progress | None = None,
                          points_per_chunk: int = 32) -> np.ndarray:
        """(Q, n, D) predictive quantiles in IDP units at each row's covariates (rows sharing covariates share
        them; computed ``points_per_chunk`` distinct points at a time, so memory stays bounded)."""
        self._check_fitted()
        self._check_call(n_samples, seed)
        q = checked_quantiles(quantiles)
        u_age, u_codes, inverse = self._unique_points(*self._covariates_of(df, "table"))
        out = np.empty((len(q), len(u_age), len(self.idps)))
        progress = as_progress(progress)
        for s in range(0, len(u_age), points_per_chunk):
            e = min(s + points_per_chunk, len(u_age))
            out[:, s:e] = self._quantile_core(u_age[s:e], u_codes[s:e], q, n_samples, seed, Progress())
            progress.update("quantiles", e, len(u_age))
        return out[:, inverse]

    def predict_quantiles_and_moments(self, df: pd.DataFrame, quantiles: tuple[float, ...],
                                      n_samples: int | None = None, seed: int | None = None,
                                      progress: Progress | None = None
                                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Q, n, D) quantiles, then (n, D) mean and variance at each row's covariates: :meth:`predict_quantiles`
        and :meth:`predict_moments` (a sampling model may draw both from one set of samples)."""
        progress = as_progress(progress)
        quant = self.predict_quantiles(df, quantiles, n_samples, seed, progress.as_stage("centiles"))
        mean, var = self.predict_moments(df, n_samples, seed, progress.as_stage("moments"))
        return quant, mean, var

    def _unique_points(self, age: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct covariate points (ages, codes) and each row's index into them: rows share samples."""
        keys = np.column_stack([age, codes]) if codes.size else age[:, None]
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        return uniq[:, 0], uniq[:, 1:].astype(np.int64), inverse.reshape(-1)


    def sample(self, covariates: pd.DataFrame, n: int = 1, seed: int | None = None,
               progress: Progress | None = None, label: str = "covariates") -> pd.DataFrame:
        """Draw ``n`` synthetic IDP vectors for every row of ``covariates`` (named ``label`` in messages).

        Returns a long frame: the covariate columns, ``sample`` (0..n-1) and one column per IDP.
        """
        self._check_fitted()
        self._check_call(None, seed)
        check_count(n, "the number of samples per row (n)")
        age, codes = self._covariates_of(covariates, label)
        values = np.asarray(self._sample_core(age, codes, n, seed, as_progress(progress))).reshape(-1, len(self.idps))
        cols = [self.encoder_.age, *self.encoder_.categorical]
        base = covariates[cols].loc[covariates.index.repeat(n)].reset_index(drop=True)
        base.insert(len(cols), "sample", np.tile(np.arange(n), len(covariates)))
        return pd.concat([base, pd.DataFrame(values, columns=self.idps)], axis=1)

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and variance (n, D) at each row's covariates (for EXPV, SMSE, MSLL); ``progress`` hears of
        (and may cancel) the work where the model samples."""
        raise NotImplementedError

    def predict_mixture(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> PredictiveMixture:
        """Each row's predictive distribution (n, D) as a mixture of the IDPs' floors, ceilings and bodies; for a
        model without point masses, :meth:`predict_moments` with no bounds."""
        return PredictiveMixture.continuous(*self.predict_moments(df, n_samples, seed, progress))

    def _score_core(self, y, age, codes, n_samples, seed, progress):
        raise NotImplementedError

    def _quantile_core(self, ages, codes, quantiles, n_samples, seed, progress) -> np.ndarray:
        raise NotImplementedError

    def _sample_core(self, age, codes, n, seed, progress) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ adaptation
    def adapt(self, controls: pd.DataFrame, refine: list[str] | tuple[str, ...] = (),
              progress: Progress | None = None, label: str = "controls",
              network_input: str = "marginal") -> NormativeModel:
        """A new model adapted to the levels (sites, scanners) of ``controls``; this model is left untouched.

        Levels of categorical covariates the reference never saw are learnt from the healthy ``controls``
        (empirical Bayes in the location-scale stage, :mod:`normcore.tabular.adaptation`); known levels of the
        covariates named in ``refine`` are refined. The controls may hold any subset of the model's IDPs;
        the others keep the reference behaviour. Nothing of the reference is refitted. The result records
        what was adapted in ``adaptation_`` (and its card). Warnings are in ``adapt_warnings_``.

        ``network_input`` says what a model with a network (the diffusion backbones) is conditioned on for a
        new level: ``"marginal"`` (a training level drawn per sample: the mixture over training sites) or
        ``"embedding"`` (a mixture of the training levels' inputs fitted to the controls by the denoising
        loss, everything else frozen). Models without a network (the SHASH baseline) accept only
        ``"marginal"``. BENCHMARKS.md compares the two. A batch covariate is no input of the network, so its
        new levels are adapted by their location and scale alone whatever ``network_input`` says (recorded as
        ``"none"``).
        """
        from normcore.tabular.adaptation import (
            FEW_TRAINING_LEVELS,
            check_levels_can_be_learnt,
            estimate_level,
            far_from_every_level,
        )

        self._check_fitted()
        progress = as_progress(progress)
        if network_input not in NETWORK_INPUTS:
            raise InputError(f"network_input must be one of {NETWORK_INPUTS}, not {network_input!r}")
        if network_input != "marginal" and not self._has_network_input():
            raise InputError(f"{type(self).__name__} has no network whose input could be fitted; use "
                             "network_input='marginal'")
        if getattr(self, "location_scale_", None) is None:
            raise InputError(f"{type(self).__name__} with this configuration has no location-scale stage to adapt")
        unknown = [c for c in refine if c not in self.encoder_.categorical]
        if unknown:
            raise InputError(f"cannot refine {unknown}: the model's categorical covariates are "
                             f"{self.encoder_.categorical}")
        age = self.encoder_.ages(controls, label)
        missing_cov = [c for c in self.encoder_.categorical if c not in controls.columns]
        if missing_cov:
            raise InputError(f"{label}: covariate column(s) {missing_cov} missing (the model needs "
                             f"{[self.encoder_.age, *self.encoder_.categorical]})")
        present = [c for c in self.idps if c in controls.columns]
        if not present:
            raise InputError(f"{label}: none of the model's {len(self.idps)} IDP columns is present "
                             f"(e.g. {self.idps[:3]}){_respelled_hint(controls.columns, self.idps)}")
        y = self._idp_values(controls.reindex(columns=[*controls.columns, *[c for c in self.idps
                                                                           if c not in controls.columns]]), label)
        codes = self.encoder_.codes(controls, allow_unseen=True, label=label)
        labels = {c: controls[c].map(category_label).to_numpy() for c in self.encoder_.categorical}
        new_cols = [c for k, c in enumerate(self.encoder_.categorical) if (codes[:, k] == MARGINALISE).any()]
        if len(new_cols) > 1 and ((codes == MARGINALISE).sum(axis=1) > 1).any():
            raise InputError(f"{label}: rows with new levels of several covariates ({new_cols}); adapt one at a time")
        work = [(c, lvl) for c in self.encoder_.categorical for lvl in pd.unique(labels[c])
                if c in new_cols and lvl not in self.encoder_.levels[c] or c in refine]
        if not work:
            raise InputError(f"{label}: the controls hold no level the model has not seen; name covariates to "
                             "refine to adapt known levels")
        warnings = []
        lo, hi = self.age_range_
        outside = int(((age < lo) | (age > hi)).sum())
        if outside:
            warnings.append(f"{outside} control(s) aged outside the reference range {lo:g}-{hi:g}: the adaptation "
                            "there rests on extrapolated age curves")
        new = copy.deepcopy(self)
        ls = new.location_scale_
        n_train = float(self.training_summary_.get("n_train", 0) + self.training_summary_.get("n_validation", 0))
        records = []
        for step, (col, lvl) in enumerate(work):
            k = self.encoder_.categorical.index(col)
            rows = labels[col] == lvl
            count = int(rows.sum())
            if count < MIN_CONTROLS_PER_LEVEL:
                raise InputError(f"{label}: {col}={lvl} has {count} control(s); adaptation needs at least "
                                 f"{MIN_CONTROLS_PER_LEVEL} (with fewer, the estimate is almost only the prior)")
            known = lvl in new.encoder_.levels[col]
            if known:
                code = new.encoder_.levels[col].index(lvl)
                train_count = new.encoder_.frequencies[col][code] * n_train
            else:
                check_levels_can_be_learnt(ls, col, k)
                if ls.n_levels[k] < FEW_TRAINING_LEVELS:
                    warnings.append(f"{col}: the spread of level effects that guides the adaptation comes from only "
                                    f"{ls.n_levels[k]} training levels")
                code = new.encoder_.add_level(col, lvl)
                if ls.add_level(k) != code:
                    raise RuntimeError("encoder and location-scale levels disagree")
                train_count = None
            sub_codes = codes[rows].copy()
            sub_codes[:, k] = code
            unmeasured_here = new._unmeasured_idps(col, lvl) if known else []
            est = estimate_level(ls, k, code if known else None, age[rows], sub_codes, self._body_values(y[rows]),
                                 new.encoder_.trained_levels[col], train_count,
                                 np.isin(self.idps, unmeasured_here) if unmeasured_here else None)
            measured_now = [c for c, n in zip(self.idps, est.n_controls, strict=True) if c in unmeasured_here and n]
            surprising = far_from_every_level(f"{col}={lvl}", self.idps, est, y[rows],
                                              self.training_summary_.get("idp_mean", {}))
            if surprising:
                warnings.append(surprising)
            ls.set_level_effect(k, code, est.mu, est.logvar)
            sees = self._network_sees(col)
            network = {"network_input": "marginal" if sees else "none"}
            if network_input == "embedding" and sees and not known:
                network = new._adapt_network_input(col, code, age[rows], sub_codes, y[rows], progress)
            per_sex = {}
            for other in self.encoder_.categorical:
                if other != col and other.lower() in SEX_NAMES:
                    per_sex = {str(s): int(n) for s, n in pd.Series(labels[other][rows]).value_counts().items()}
                    thin = {s: n for s, n in per_sex.items() if n < WARN_CONTROLS_PER_SEX}
                    if thin or len(per_sex) < len(self.encoder_.levels[other]):
                        warnings.append(f"{col}={lvl}: fewer than {WARN_CONTROLS_PER_SEX} controls per {other} "
                                        f"({per_sex}); centiles for the thin group rest mostly on the reference")
            records.append({"covariate": col, "level": lvl, "new_level": not known, "n_controls": count,
                            "controls_per_sex": per_sex,
                            "age_range": [float(age[rows].min()), float(age[rows].max())],
                            "idps_adapted": int((est.n_controls > 0).sum()),
                            "mean_weight_location": float(est.weight_location[est.n_controls > 0].mean()),
                            "mean_weight_scale": float(est.weight_scale[est.n_controls > 0].mean()),
                            **({"newly_measured": measured_now} if known and measured_now else {}), **network})
            progress.update("adapt", step + 1, len(work))
        new.adaptation_ = list(getattr(self, "adaptation_", [])) + [{
            "levels": records, "reference": self.identity(), "idps_present": len(present), "idps": len(self.idps),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}]
        new.adapt_warnings_ = warnings
        return new

    def _has_network_input(self) -> bool:
        """Whether the model conditions a network on the categorical levels (see :meth:`adapt`)."""
        return False

    # ------------------------------------------------------------------ point masses (see point_masses.py)
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each IDP's floor and ceiling (``floor_``, ``ceiling_``; NaN: none, as for models that set none apart and
        models saved before point masses)."""
        d = len(self.idps)
        return getattr(self, "floor_", np.full(d, np.nan)), getattr(self, "ceiling_", np.full(d, np.nan))

    def _has_bounds(self) -> bool:
        """Whether some IDP has a floor or a ceiling."""
        return not all(np.isnan(b).all() for b in self._bounds())

    def _bound_shares(self) -> np.ndarray:
        """(D, 2): each IDP's share of the training values at its floor and at its ceiling (models with bounds)."""
        raise NotImplementedError

    def _body_values(self, y: np.ndarray) -> np.ndarray:
        """IDP values ``y`` as the location-scale stage sees them: values at a point mass left out (NaN)."""
        if not self._has_bounds():
            return y
        at_floor, at_ceiling = at_bounds(y, *self._bounds())
        return np.where(at_floor | at_ceiling, np.nan, y)

    def _location_scale_of(self, age: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) location and scale of rows: the location-scale stage's, except for IDPs whose values between
        their bounds are too few for it (``pooled_body_``: one location and scale for every row)."""
        mu, sd = self.location_scale_.location_scale(age, codes)
        for j, (centre, spread) in getattr(self, "pooled_body_", {}).items():
            mu[:, j], sd[:, j] = centre, spread
        return mu, sd

    def _network_sees(self, col: str) -> bool:
        """Whether a network is conditioned on categorical covariate ``col`` (not a batch covariate)."""
        return self._has_network_input() and col in self.encoder_.network_covariates

    def _adapt_network_input(self, col: str, code: int, age: np.ndarray, codes: np.ndarray, y: np.ndarray,
                             progress: Progress) -> dict:
        raise NotImplementedError

    def identity(self) -> dict:
        """What names this fitted model: its type, training size, and a fingerprint of what was fitted
        (weights, preprocessing, levels, IDPs; not the run-time options such as the sample count)."""
        tensors, entries = self._state()
        h = hashlib.sha256()
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
        fitted = {"idps": self.idps, "encoder": self.encoder_.to_dict(), **entries,
                  "adaptation": getattr(self, "adaptation_", [])}
        h.update(json.dumps(fitted, sort_keys=True, default=str).encode())
        return {"model_type": self.model_type, "n_train": self.training_summary_.get("n_train"),
                "fingerprint": h.hexdigest()[:16]}

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
                "adaptation": list(getattr(self, "adaptation_", [])),
                "info": dict(getattr(self, "info_", {})),
                **({"multivariate_calibration": self.multivariate_calibration_.to_dict()}
                   if getattr(self, "multivariate_calibration_", None) is not None else {}),
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
        if device is not None:
            resolve_device(device)  # a device asked for explicitly must exist (a card's own may fall back)
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
            model.adaptation_ = card.get("adaptation", [])
            model.info_ = card.get("info", {})
            calibration = card.get("multivariate_calibration")
            model.multivariate_calibration_ = MultivariateCalibration.from_dict(calibration) if calibration else None
            model._restore(tensors, card, str(path))
            model.check_params()
        except (KeyError, TypeError) as exc:
            raise InputError(f"{path}: the model card is incomplete or malformed ({type(exc).__name__}: {exc})") \
                from None
        return model

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        raise NotImplementedError

    def _restore(self, tensors: dict[str, torch.Tensor], card: dict, path: str) -> None:
        raise NotImplementedError

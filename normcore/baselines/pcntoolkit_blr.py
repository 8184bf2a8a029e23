"""Adapter for PCNtoolkit's warped Bayesian linear regression (optional dependency, imported lazily).

The reference per-IDP normative model of the field: BLR on a cubic B-spline basis of age for the mean
and (heteroscedastic) the noise, sex/site as fixed effects on both, and a sinh-arcsinh likelihood
warp. Install with ``pip install -r requirements-baselines.txt``. The adapter exposes the same
``fit / score / centiles / sample`` interface as the diffusion model. Differences, said plainly:
a categorical covariate not fixed in ``centiles`` is set to its most frequent training level (PCNtoolkit
has no marginalisation); ``sample`` inverts the model's centile function on a grid of 161 normal
scores in [-4, 4] (linear interpolation); models are not saved (PCNtoolkit's own files are not
the safetensors + JSON format this project guarantees).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
from scipy import special

from normcore.data.validation import prepare_training_table
from normcore.errors import InputError
from normcore.preprocessing import CovariateEncoder, category_label
from normcore.progress import Progress
from normcore.tabular.scoring import assemble_scores, mahalanobis


def pcntoolkit_available() -> bool:
    """True when the optional PCNtoolkit package can be imported."""
    try:
        with _quiet():
            import pcntoolkit  # noqa: F401
    except Exception:  # an incomplete install raises more than ImportError
        return False
    return True


@contextlib.contextmanager
def _quiet():
    """PCNtoolkit prints progress lines for every IDP; keep the caller's output readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            logging.disable(logging.NOTSET)


class PCNToolkitBLR:
    """PCNtoolkit BLR (B-spline, heteroscedastic, SinhArcsinh warp, sex/site fixed effects) per IDP."""

    PARAMS = ("nknots", "warp", "seed")

    def __init__(self, nknots: int = 5, warp: str | None = "WarpSinhArcsinh", seed: int = 0):
        self.nknots = nknots
        self.warp = warp
        self.seed = seed
        self.backbone = "pcntoolkit-blr"

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.PARAMS}

    @property
    def covariates_(self) -> list[str]:
        return self.encoder_.categorical

    def _norm_data(self, df: pd.DataFrame, name: str, with_y: bool = True):
        from pcntoolkit import NormData

        frame = pd.DataFrame({"age": df[self.encoder_.age].to_numpy(float), "sub_id": np.arange(len(df))})
        for col in self.encoder_.categorical:
            frame[col] = df[col].map(category_label).to_numpy() if col in df else self._default_level(col)
        for idp in self.idps:
            frame[idp] = df[idp].to_numpy(float) if with_y else 0.0
        if not self.encoder_.categorical:
            frame["_batch"] = "all"
        batch = self.encoder_.categorical or ["_batch"]
        return NormData.from_dataframe(name, frame, covariates=["age"], batch_effects=batch,
                                       response_vars=self.idps, subject_ids="sub_id")

    def _default_level(self, col: str) -> str:
        freqs = self.encoder_.frequencies[col]
        return self.encoder_.levels[col][int(np.argmax(freqs))]

    def fit(self, df: pd.DataFrame, age: str = "age", covariates: list[str] | tuple[str, ...] = (),
            idps: list[str] | None = None, idps_regex: str | None = None, progress: Progress | None = None,
            label: str = "training data") -> PCNToolkitBLR:
        if not pcntoolkit_available():
            raise InputError("PCNtoolkit is not installed: pip install -r requirements-baselines.txt")
        from pcntoolkit import BLR, BsplineBasisFunction, NormativeModel

        start = time.perf_counter()
        covariates = list(covariates)
        data, self.idps, self.fit_warnings_ = prepare_training_table(df, age, covariates, idps, idps_regex, label)
        self.encoder_ = CovariateEncoder(age, covariates).fit(data)
        self._dir = tempfile.mkdtemp(prefix="normcore-pcn-")
        blr = BLR(name="blr", fixed_effect=True, heteroskedastic=True, fixed_effect_var=True, warp_name=self.warp,
                  basis_function_mean=BsplineBasisFunction(degree=3, nknots=self.nknots),
                  basis_function_var=BsplineBasisFunction(degree=3, nknots=self.nknots))
        self.model_ = NormativeModel(blr, savemodel=False, saveresults=False, saveplots=False, evaluate_model=False,
                                     save_dir=self._dir)
        np.random.seed(self.seed)
        with _quiet():
            self.model_.fit(self._norm_data(data, "train"))
            z = self.model_.predict(self._norm_data(data, "train_z"))["Z"].to_numpy()
        self.z_correlation_ = np.corrcoef(z, rowvar=False).reshape(len(self.idps), len(self.idps))
        self.history_ = {"fit_time_s": time.perf_counter() - start, "n_train": int(len(data))}
        self.training_summary_ = {"n_train": int(len(data)), "n_validation": 0,
                                  "idp_mean": {c: float(data[c].mean()) for c in self.idps},
                                  "idp_std": {c: float(data[c].std()) for c in self.idps}}
        return self

    def score(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
              progress: Progress | None = None, label: str = "table") -> pd.DataFrame:
        """Z from PCNtoolkit's predict, centile = Phi(Z); same columns as the diffusion model."""
        age = self.encoder_.ages(df, label)
        self.encoder_.codes(df, label=label)  # unseen levels: same error as the other models
        y = df[self.idps].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        with _quiet():
            z = self.model_.predict(self._norm_data(df.assign(**{c: np.nan_to_num(df[c].to_numpy(float))
                                                                  for c in self.idps}), "score"))["Z"].to_numpy()
        z = z.astype(float)
        z[np.isnan(y)] = np.nan
        centile = special.ndtr(z)
        corr = np.broadcast_to(self.z_correlation_, (len(df), len(self.idps), len(self.idps)))
        d2, mz = mahalanobis(z, corr)
        return assemble_scores(df, self.idps, z, centile, d2, mz, np.zeros_like(z, dtype=bool),
                               self.encoder_.out_of_range(age))

    def _centile_matrix(self, cov: pd.DataFrame, quantiles) -> np.ndarray:
        with _quiet():
            out = self.model_.compute_centiles(self._norm_data(cov, "centiles", with_y=False),
                                               centiles=list(map(float, quantiles)))
        return out["centiles"].transpose("centile", "observations", "response_vars").sel(
            response_vars=self.idps).to_numpy()

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (n, D): the median and the 15.9-84.1% half-width of the predictive centiles."""
        vals = self._centile_matrix(df.reset_index(drop=True), (special.ndtr(-1.0), 0.5, special.ndtr(1.0)))
        return vals[1], ((vals[2] - vals[0]) / 2) ** 2

    def centiles(self, ages, quantiles=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), fixed: dict | None = None,
                 n_samples: int | None = None, idps: list[str] | None = None, seed: int | None = None,
                 progress: Progress | None = None) -> pd.DataFrame:
        fixed = dict(fixed or {})
        ages = np.asarray(ages, float)
        cov = pd.DataFrame({self.encoder_.age: ages})
        for col in self.encoder_.categorical:
            cov[col] = category_label(fixed[col]) if col in fixed else self._default_level(col)
        vals = self._centile_matrix(cov, quantiles)
        frames = []
        for qi, q in enumerate(quantiles):
            for name in idps or self.idps:
                frame = {"age": ages, **{k: [v] * len(ages) for k, v in fixed.items()}}
                frame.update(idp=name, quantile=float(q), value=vals[qi, :, self.idps.index(name)])
                frames.append(pd.DataFrame(frame))
        return pd.concat(frames, ignore_index=True).sort_values(["idp", "quantile", "age"], kind="stable") \
            .reset_index(drop=True)

    def sample(self, covariates: pd.DataFrame, n: int = 1, seed: int | None = None,
               progress: Progress | None = None) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed if seed is None else seed)
        zgrid = np.linspace(-4, 4, 161)
        table = self._centile_matrix(covariates.reset_index(drop=True), special.ndtr(zgrid))  # (G, rows, D)
        z = rng.standard_normal((len(covariates), n, len(self.idps)))
        values = np.empty_like(z)
        for i in range(len(covariates)):
            for j in range(len(self.idps)):
                values[i, :, j] = np.interp(z[i, :, j], zgrid, table[:, i, j])
        cols = [self.encoder_.age, *self.encoder_.categorical]
        base = covariates[cols].loc[covariates.index.repeat(n)].reset_index(drop=True)
        base.insert(len(cols), "sample", np.tile(np.arange(n), len(covariates)))
        return pd.concat([base, pd.DataFrame(values.reshape(-1, len(self.idps)), columns=self.idps)], axis=1)

    def save(self, path) -> None:
        raise InputError("PCNtoolkit models are not saved by normcore (only safetensors + JSON models are); "
                         "refit, or use the built-in shash-baseline")

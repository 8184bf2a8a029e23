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

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress
from normcore.tabular.base import NormativeModel
from normcore.tabular.covariates import MARGINALISE, CovariateEncoder, category_label
from normcore.tabular.multivariate_calibration import cross_fitted


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


@contextlib.contextmanager
def _scratch_dir(model=None):
    """PCNtoolkit makes folders under its model's ``save_dir`` on every fit and predict (and, given none, in the
    user's home), though this adapter has it save nothing: a temporary folder (yielded, and made ``model``'s
    ``save_dir`` when given) that is removed when the call ends."""
    with tempfile.TemporaryDirectory(prefix="normcore-pcn-") as folder:
        if model is not None:
            model.save_dir = folder
        yield folder


class PCNToolkitBLR(NormativeModel):
    """PCNtoolkit BLR (B-spline, heteroscedastic, SinhArcsinh warp, sex/site fixed effects) per IDP."""

    MODEL_TYPE = "pcntoolkit-blr"
    EXACT = True

    def __init__(self, nknots: int = 5, warp: str | None = "WarpSinhArcsinh", seed: int = 0):
        self.nknots = nknots
        self.warp = warp
        self.seed = seed

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

    def _fit_core(self, data: pd.DataFrame, age: str, covariates: list[str], label: str, progress: Progress,
                  dropped_rows: int) -> None:
        if not pcntoolkit_available():
            raise InputError("PCNtoolkit is not installed: pip install -r requirements-baselines.txt")
        from pcntoolkit import BLR, BsplineBasisFunction
        from pcntoolkit import NormativeModel as PCNNormativeModel

        start = time.perf_counter()
        encoder = CovariateEncoder(age, covariates).fit(data)
        blr = BLR(name="blr", fixed_effect=True, heteroskedastic=True, fixed_effect_var=True, warp_name=self.warp,
                  basis_function_mean=BsplineBasisFunction(degree=3, nknots=self.nknots),
                  basis_function_var=BsplineBasisFunction(degree=3, nknots=self.nknots))
        self.encoder_ = encoder
        np.random.seed(self.seed)
        with _quiet(), _scratch_dir() as folder:
            self.model_ = PCNNormativeModel(blr, savemodel=False, saveresults=False, saveplots=False,
                                            evaluate_model=False, save_dir=folder)
            self.model_.fit(self._norm_data(data, "train"))
            z = self.model_.predict(self._norm_data(data, "train_z"))["Z"].to_numpy()
        self.z_correlation_ = np.corrcoef(z, rowvar=False).reshape(len(self.idps), len(self.idps))
        self.multivariate_calibration_ = cross_fitted(z, seed=self.seed)  # d2 among new people, not chi2(D)
        self.history_ = {"fit_time_s": time.perf_counter() - start, "n_train": int(len(data))}
        self.training_summary_ = {"n_train": int(len(data)), "n_validation": 0, "dropped_rows": int(dropped_rows),
                                  "idp_mean": {c: float(data[c].mean()) for c in self.idps},
                                  "idp_std": {c: float(data[c].std()) for c in self.idps}}

    # ------------------------------------------------------------------ model cores (see NormativeModel)
    def _score_core(self, y, age, codes, n_samples, seed, progress):
        """Z from PCNtoolkit's predict, centile = Phi(Z) (``n_samples`` and ``seed`` are not used)."""
        frame = pd.DataFrame({self.encoder_.age: age})
        for k, col in enumerate(self.encoder_.categorical):
            frame[col] = [self.encoder_.levels[col][c] for c in codes[:, k]]
        frame[self.idps] = np.nan_to_num(y)
        with _quiet(), _scratch_dir(self.model_):
            z = self.model_.predict(self._norm_data(frame, "score"))["Z"].to_numpy().astype(float)
        return special.ndtr(z), z, np.zeros_like(z, dtype=bool), np.asarray(self.z_correlation_)

    def _covariate_frame(self, age: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
        """A covariate table for PCNtoolkit; a marginalised covariate takes its most frequent level."""
        cov = pd.DataFrame({self.encoder_.age: age})
        for k, col in enumerate(self.encoder_.categorical):
            levels = self.encoder_.levels[col]
            cov[col] = [self._default_level(col) if c == MARGINALISE else levels[c] for c in codes[:, k]]
        return cov

    def _centile_matrix(self, cov: pd.DataFrame, quantiles) -> np.ndarray:
        with _quiet(), _scratch_dir(self.model_):
            out = self.model_.compute_centiles(self._norm_data(cov, "centiles", with_y=False),
                                               centiles=list(map(float, quantiles)))
        return out["centiles"].transpose("centile", "observations", "response_vars").sel(
            response_vars=self.idps).to_numpy()

    def _quantile_core(self, ages, codes, quantiles, n_samples, seed, progress) -> np.ndarray:
        return self._centile_matrix(self._covariate_frame(ages, codes), quantiles)

    def _sample_core(self, age, codes, n, seed, progress) -> np.ndarray:
        """Inverse-CDF draws by linear interpolation in the centile function on a normal-score grid."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        zgrid = np.linspace(-4, 4, 161)
        table = self._centile_matrix(self._covariate_frame(age, codes), special.ndtr(zgrid))  # (G, rows, D)
        z = rng.standard_normal((len(age), n, len(self.idps)))
        # piecewise-linear interpolation, vectorised over rows and IDPs
        pos = np.clip(np.searchsorted(zgrid, z) - 1, 0, len(zgrid) - 2)  # (rows, n, D)
        w = np.clip((z - zgrid[pos]) / (zgrid[1] - zgrid[0]), 0.0, 1.0)
        tab = table.transpose(1, 2, 0)  # (rows, D, G)
        rows = np.arange(len(age))[:, None, None]
        cols = np.arange(len(self.idps))[None, None, :]
        return (1 - w) * tab[rows, cols, pos] + w * tab[rows, cols, pos + 1]

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (n, D): the median and the 15.9-84.1% half-width of the predictive centiles."""
        self._check_fitted()
        age, codes = self._covariates_of(df, "table")
        vals = self._centile_matrix(self._covariate_frame(age, codes), (special.ndtr(-1.0), 0.5, special.ndtr(1.0)))
        return vals[1], ((vals[2] - vals[0]) / 2) ** 2

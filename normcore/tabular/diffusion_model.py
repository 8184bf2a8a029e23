"""The tabular normative model: a conditional diffusion model of all IDPs jointly given covariates."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import special, stats

from normcore._utils.device import describe_device, resolve_device
from normcore._utils.distributed import (
    distributed_context,
    init_distributed_from_env,
    owned_chunks,
    sum_across_ranks,
)
from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore._utils.threads import blas_threads_like_torch
from normcore.diffusion import SAMPLERS, NoiseSchedule
from normcore.diffusion import sample as run_sampler
from normcore.diffusion.noise import SAMPLING_NOISE, ScrambledSobol, noise_draws
from normcore.diffusion.parameterisation import PARAMETERISATIONS, GaussianCopulaResidual, ZeroResidual, wrap_denoiser
from normcore.metrics.scoring_rules import sample_crps
from normcore.nets import BACKBONES, build_backbone, check_backbone_params
from normcore.nets.film_mlp import auto_marginal_width
from normcore.tabular.base import NormativeModel
from normcore.tabular.covariates import MARGINALISE, CovariateEncoder, category_label
from normcore.tabular.gaussianisation import IDPTransformer
from normcore.tabular.heavy_tails import age_bins
from normcore.tabular.imputation import LatentImputer
from normcore.tabular.location_scale import LocationScale
from normcore.tabular.multivariate_calibration import MIN_CALIBRATION_ROWS, MultivariateCalibration
from normcore.tabular.params import (
    MIN_TIMESTEPS,
    Rule,
    boolean,
    checked_quantiles,
    choice,
    integer,
    names,
    number,
    optional,
)
from normcore.tabular.point_masses import (
    at_bounds,
    bound_shares,
    bounds_from_dict,
    bounds_to_dict,
    clip_to_bounds,
    find_bounds,
    latent_bounds,
    pooled_bodies,
    spread_beyond_bounds,
)
from normcore.tabular.predictive_mixture import PredictiveMixture
from normcore.tabular.scoring import (
    MAX_MULTIVARIATE_IDPS,
    TAIL_FIT_FROM,
    TAIL_SCALES,
    PointCorrelations,
    copula_correlation,
    mix_scores,
    multivariate_scores,
    randomised_pit,
    tail_ranks,
    tail_z,
)
from normcore.tabular.splits import held_out_split
from normcore.tabular.training import TrainConfig, train_denoiser


def _migrate_v4(card: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Version 4 cards have no point masses (``"point_masses"``, the floors and ceilings version 5 may hold and an
    older reader would ignore): their samples are not censored, as before."""


def _migrate_v3(card: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Version 3 cards' quantile maps have no generalised Pareto tails (``"tail_gpd"``, which version 4 may hold and
    an older reader would ignore): nothing to change."""


def _migrate_v2(card: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Version 2 cards sampled with the full reverse SDE (``eta`` was DDIM's alone) over log-SNR steps spaced from
    the schedule's end; they keep doing so."""
    params = card["params"]
    if params.get("sampler", "dpm++2m-sde") == "dpm++2m-sde":
        params["eta"] = 1.0
    params["log_snr_start"] = None


def _migrate_v1(card: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Version 1 cards: the parameterisation and the per-IDP path were added without a version change.

    Cards without ``parameterisation`` predicted the noise directly (``eps``); FiLM-MLP cards without
    ``marginal_width`` have the per-IDP path exactly when their weights hold ``marginal.*`` tensors.
    """
    params = card["params"]
    params.setdefault("parameterisation", "eps")
    params["backbone_params"] = dict(params.get("backbone_params") or {})
    if params.get("backbone") == "film-mlp" and "marginal_width" not in params["backbone_params"]:
        params["backbone_params"]["marginal_width"] = _saved_marginal_width(tensors)


def _saved_marginal_width(tensors: dict[str, torch.Tensor]) -> int:
    """Width of the per-IDP path that saved FiLM-MLP weights hold (0: they have none)."""
    marginal = tensors.get("marginal.idp")
    return int(marginal.shape[1]) if marginal is not None else 0


# fitting an adapted level's network input (see _adapt_network_input): rows per step (controls repeated with
# fresh noise levels), Adam steps and learning rate on the softmax logits of the mixture weights
ADAPT_INPUT_ROWS = 2048
ADAPT_INPUT_STEPS = 150
ADAPT_INPUT_LR = 0.05
# memory bounds of scoring (see _score_core): samples held at once, per-point correlations kept, and values (rows x
# IDPs) whose tails are scored at once (_tail_scores)
SCORE_SAMPLE_BYTES = 128 * 1024**2
CORRELATION_BYTES = 1024**3
TAIL_BLOCK_VALUES = 1 << 20
# covariate points per chunk at most: the unit of work that `torchrun` ranks share (see _point_chunks)
POINTS_PER_CHUNK = 256
# the sampler's defaults for new models (BENCHMARKS.md, solver): the share of the reverse SDE's noise that
# dpm++2m-sde injects, and the log-SNR (signal share 1 / (1 + e^3), 0.25%, of the standardised IDPs) from which the
# log-SNR spaced solvers space their steps evenly
SDE_ETA = 0.5
LOG_SNR_START = -3.0
# default spacing of the age grid on which scoring draws shared samples, as a share of the training age range
# (see _score_points)
SCORE_AGE_RESOLUTION = 0.025
# training on incomplete rows (see _complete_latents): completions of the training latents, at most this many and
# at most this much memory together
IMPUTED_COMPLETIONS = 8
IMPUTATION_BYTES = 256 * 1024**2


CALIBRATION_STAGE = "calibrate multivariate score"  # the progress stage of a fit's last part
STEP0_STAGE = "choose copula or network"  # the progress stage that weighs the copula against the trained network
STEP0_SAMPLES = 256  # samples per validation row for that choice (both candidates draw the same noise)
STEP0_ROWS = 256  # at most this many validation rows for it (the first ones; the split is random)
STEP0_INTERIM_ROWS = 64  # the test is first made on this many rows ...
STEP0_FUTILITY_P = 0.9  # ... and stops there, keeping the network, when its p-value is above this (copula worse)
STEP0_ALPHA = 0.025  # the one-sided level at which the copula's lower CRPS overrules the loss's network
PRIOR_PREFIX = "prior."  # saved tensors of the denoiser's prior (the Gaussian copula's correlation), beside the network
STANDARD_PRIOR, COPULA_PRIOR = "standard-normal", "gaussian-copula"  # the card's denoiser_prior: which exact denoiser


class NormativeDiffusion(NormativeModel):
    """Conditional denoising diffusion normative model (scikit-learn style estimator).

    Parameters
    ----------
    backbone : ``"film-mlp"`` or ``"saint"``; ``backbone_params`` are passed to the network.
    parameterisation : ``"gaussian-residual"`` (default: the network learns the departure from the exact
      denoiser of independent standard-normal IDPs, see :class:`~normcore.diffusion.GaussianResidual`)
      or ``"eps"`` (plain noise prediction).
    copula_candidate : with ``"gaussian-residual"``, early stopping's step 0 is the Gaussian copula of the training
      latents (the exact denoiser of N(0, R), R their Ledoit-Wolf-shrunk correlation, around the untrained network,
      :class:`~normcore.diffusion.GaussianCopulaResidual`): a closed-form model with the preprocessing's marginals
      and the linear dependence. The trained network is kept when it beats the copula on the validation loss (early
      stopping's measure), unless the copula's CRPS of each IDP's predictive distribution on the validation rows (the
      centiles' proper score) is significantly lower (``_choose_copula_or_network``; small cohorts: BENCHMARKS.md).
      ``False``: step 0 is the untrained network under independent standard normals, kept only when no trained
      state beats it on the validation loss.
    location_scale : first standardise each IDP by a smooth conditional location and scale
      (:class:`~normcore.tabular.location_scale.LocationScale`); the diffusion model learns the rest.
    batch_covariates : categorical covariates (e.g. ``["site"]``) modelled as batch effects, as ComBat and
      hierarchical Bayesian regression model sites: a shift and a scale per level and IDP in the location-scale
      stage, with each level's own penalised age curve of the location where leave-one-out error says it helps
      (``LocationScale``'s ``curves``), and no input of the network, whose residual shape (skew, modes,
      dependence) is then shared by their levels. Scoring shares samples across their levels, so it draws samples
      at far fewer covariate points, and a new level is adapted by its shift and scale alone. A shape that truly
      differs between levels is averaged over them (effects measured: BENCHMARKS.md). Needs ``location_scale``.
      Default: none (every categorical covariate is also an input of the network).
    transform : per-IDP Gaussianisation before diffusion: ``"quantile"``, ``"yeo-johnson"``, ``"standard"``.
    schedule, timesteps : noise schedule (``"cosine"`` or ``"linear"``) and its length T.
    sampler, sampling_steps, eta : ``"dpm++2m-sde"`` (default: stochastic second-order solver),
      ``"dpm++2m"`` (ODE), ``"ddim"`` or ``"ddpm"``; the respaced chain length; the stochastic share of
      ``dpm++2m-sde`` and ``ddim`` in [0, 1] (0: the probability-flow ODE; ``None``: ``SDE_ETA`` for
      ``dpm++2m-sde``, 0 for DDIM). See the README and BENCHMARKS.md for why these are the defaults.
    log_snr_start : the log-SNR from which ``dpm++2m-sde`` and ``dpm++2m`` space their steps evenly, one first
      step taking pure noise there (``None``: from the schedule's end; see
      :meth:`~normcore.diffusion.NoiseSchedule.respaced_log_snr`).
    clip_x0 : bound on the predicted clean sample on the Gaussianised scale at each reverse step
      (a safety bound: the first reverse steps divide by sqrt(abar_T)).
    n_samples : samples per covariate point (M) for scores and centile curves.
    sampling_noise : ``"sobol"`` (default) or ``"pseudo-random"``: the noise behind the M samples of a covariate
      point when scores, centile curves and moments are estimated from them. ``"sobol"`` makes them one randomised
      quasi-Monte Carlo set (:class:`~normcore.diffusion.noise.ScrambledSobol`): each sample is still a sample of the
      model, but together they cover it more evenly, so the estimates carry less Monte-Carlo error at the same M
      (BENCHMARKS.md). :meth:`sample` always draws independent (pseudo-random) samples.
    tail_scale : ``"gaussianised"`` (default) or ``"residual"``: the scale on which values beyond the outer 1% of a
      point's samples get their z from a normal tail (:data:`~normcore.tabular.scoring.TAIL_SCALES`). The residual
      scale assumes conditional tails that are normal in the measures' own units; on heavy-tailed real IDPs it
      scores more healthy values as extreme, so it is not the default (accuracy of both: BENCHMARKS.md, tails).
    epochs : maximal training epochs (``None``: the auto budget, :func:`~normcore.tabular.training.planned_epochs`);
      early stopping on a validation split of ``val_fraction`` stops sooner.
    allow_unseen : score categories unseen in training by marginalising over the training levels
      (e.g. a new site treated as a random training site); otherwise they are an error.
    device : ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    score_age_resolution : years; scoring draws samples on a grid of ages of this spacing, per level, shared by the
      subjects near each grid age (mixed linearly in age between the two around a subject where both are drawn;
      ``None``: ``SCORE_AGE_RESOLUTION`` of the training age range; 0: each distinct age its own samples; see
      ``_score_points``).
    """

    PARAM_RULES: ClassVar[dict[str, Rule]] = {
        "backbone": choice(*BACKBONES), "transform": choice("quantile", "yeo-johnson", "standard"),
        "schedule": choice("cosine", "linear"), "timesteps": integer(MIN_TIMESTEPS),
        "sampler": choice(*SAMPLERS), "sampling_steps": integer(1), "eta": optional(number(0, 1)),
        "log_snr_start": optional(number(-math.inf)),
        "n_samples": integer(1), "epochs": optional(integer(1)), "batch_size": integer(1),
        "lr": number(0, 1, lo_open=True), "weight_decay": number(0, 1), "ema_decay": number(0, 1, hi_open=True),
        "val_fraction": number(0, 0.9, lo_open=True), "patience": integer(1), "seed": integer(0, 2**32 - 1),
        "device": choice("auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(16))), "allow_unseen": boolean,
        "clip_x0": optional(number(0, float("inf"), lo_open=True)), "location_scale": boolean,
        "parameterisation": choice(*PARAMETERISATIONS), "score_age_resolution": optional(number(0, float("inf"))),
        "sampling_noise": choice(*SAMPLING_NOISE), "tail_scale": choice(*TAIL_SCALES),
        "batch_covariates": names, "copula_candidate": boolean,
    }
    FITS_INCOMPLETE_ROWS: ClassVar[bool] = True  # per-IDP preprocessing on observed values; see _complete_latents

    def __init__(self, backbone: str = "film-mlp", transform: str = "quantile", schedule: str = "cosine",
                 timesteps: int = 1000, sampler: str = "dpm++2m-sde", sampling_steps: int = 25,
                 eta: float | None = None,
                 n_samples: int = 1000, epochs: int | None = None, batch_size: int = 256, lr: float = 2e-3,
                 weight_decay: float = 1e-4, ema_decay: float = 0.998, val_fraction: float = 0.1,
                 patience: int = 8, seed: int = 0, device: str = "auto", allow_unseen: bool = False,
                 backbone_params: dict | None = None, clip_x0: float | None = 10.0,
                 location_scale: bool = True, parameterisation: str = "gaussian-residual",
                 score_age_resolution: float | None = None, sampling_noise: str = "sobol",
                 tail_scale: str = "gaussianised", log_snr_start: float | None = LOG_SNR_START,
                 batch_covariates: list[str] | tuple[str, ...] = (), copula_candidate: bool = True):
        self.backbone = backbone
        self.transform = transform
        self.schedule = schedule
        self.timesteps = timesteps
        self.sampler = sampler
        self.sampling_steps = sampling_steps
        self.eta = eta
        self.n_samples = n_samples
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self.device = device
        self.allow_unseen = allow_unseen
        self.backbone_params = dict(backbone_params or {})
        self.clip_x0 = clip_x0
        self.location_scale = location_scale
        self.parameterisation = parameterisation
        self.score_age_resolution = score_age_resolution
        self.sampling_noise = sampling_noise
        self.tail_scale = tail_scale
        self.log_snr_start = log_snr_start
        self.batch_covariates = list(batch_covariates) if isinstance(batch_covariates, (list, tuple)) \
            else batch_covariates
        self.copula_candidate = copula_candidate

    FORMAT = "normcore-tabular-diffusion"
    FORMAT_VERSION = 5
    MIGRATIONS = {1: _migrate_v1, 2: _migrate_v2, 3: _migrate_v3, 4: _migrate_v4}
    _FITTED_MARK = "net_"

    @property
    def model_type(self) -> str:
        return self.backbone

    def check_params(self) -> NormativeDiffusion:
        super().check_params()
        if self.sampling_steps > self.timesteps:
            raise InputError(f"{type(self).__name__}: sampling_steps={self.sampling_steps} exceeds "
                             f"timesteps={self.timesteps}")
        if self.log_snr_start is not None:
            cleanest = float(NoiseSchedule(self.schedule, self.timesteps).log_snr()[0])
            if self.log_snr_start >= cleanest:
                raise InputError(f"{type(self).__name__}: log_snr_start={self.log_snr_start:g} must lie below the "
                                 f"{self.schedule} schedule's cleanest level, log-SNR {cleanest:.3g}")
        return self

    def _sampler_eta(self) -> float | None:
        """The stochastic share the sampler runs with (``eta``, or the sampler's default for this model)."""
        if self.eta is not None:
            return self.eta
        return SDE_ETA if self.sampler == "dpm++2m-sde" else None

    # ------------------------------------------------------------------ fit
    def _fit_core(self, data: pd.DataFrame, age: str, covariates: list[str], label: str, progress: Progress,
                  dropped_rows: int) -> None:
        check_backbone_params(self.backbone, self.backbone_params)
        idps = self.idps
        device = resolve_device(self.device)
        init_distributed_from_env(device)
        if device.type == "cuda" and distributed_context()[1] > 1:
            device = torch.device("cuda", distributed_context()[0] % torch.cuda.device_count())
        self.device_ = device

        rng = np.random.default_rng(self.seed)
        train_idx, val_idx = held_out_split(data, covariates, self.val_fraction, rng)
        train, val = data.iloc[train_idx], data.iloc[val_idx]

        if self.batch_covariates and not self.location_scale:
            raise InputError(f"{type(self).__name__}: batch_covariates={self.batch_covariates} need the "
                             "location-scale stage (location_scale=True), which models their levels")
        self.encoder_ = CovariateEncoder(age, covariates, self.batch_covariates).fit(train)
        # the training age range is every row's, as for the location-scale stage below (a validation row at the
        # youngest or oldest age is no extrapolation, and is not flagged out_of_range when its own table is scored)
        self.encoder_.age_min, self.encoder_.age_max = float(data[age].min()), float(data[age].max())
        self.schedule_ = NoiseSchedule(self.schedule, self.timesteps)
        n_levels = [len(self.encoder_.levels[c]) for c in covariates]

        def covs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            codes = self.encoder_.codes(frame, allow_unseen=True, label=label)
            return frame[age].to_numpy(float), self.encoder_.resolve_marginalised(codes, rng)  # level only in val

        # the closed-form preprocessing uses every row: its leave-one-out residuals are out-of-sample for
        # the location and scale of each row, so the validation rows stay valid for the network's early stopping
        age_tr, codes_tr = covs(train)
        age_va, codes_va = covs(val)
        ages, codes_all = np.r_[age_tr, age_va], np.concatenate([codes_tr, codes_va])
        y_all = np.concatenate([train[idps].to_numpy(float), val[idps].to_numpy(float)])
        # point masses (values many rows share at an extreme): the stages below are fitted to the values between
        self.floor_, self.ceiling_ = find_bounds(y_all)
        at_floor, at_ceiling = at_bounds(y_all, self.floor_, self.ceiling_)
        y_body = np.where(at_floor | at_ceiling, np.nan, y_all)  # what _body_values gives, masks kept
        with blas_threads_like_torch():
            if self.location_scale:
                self.location_scale_ = LocationScale(curves=self.encoder_.batch_columns)  # see its docstring
                r_all = self.location_scale_.fit_transform(ages, codes_all, y_body, n_levels)  # leave-one-out
                self.pooled_body_ = pooled_bodies(y_body, self.floor_, self.ceiling_)
                for j, (centre, spread) in self.pooled_body_.items():
                    r_all[:, j] = (y_body[:, j] - centre) / spread
            else:
                self.location_scale_, r_all, self.pooled_body_ = None, y_body, {}
            self.transformer_ = IDPTransformer(self.transform).fit(r_all, groups=age_bins(ages))  # tails: by age
            self.transformer_.set_point_masses(bound_shares(y_all, self.floor_, self.ceiling_))
            x_all = self._bounds_in_latent(self.transformer_.transform(r_all), y_all).astype(np.float32)
            x_val = x_all[len(train):]  # as scoring sees them (at a floor: the floor), for the calibrations below
            x_fit = spread_beyond_bounds(x_all, at_floor, at_ceiling, self.seed + 3)
            start = time.perf_counter()
            x_train_in, x_val_in, observed_tr, observed_va = self._complete_latents(x_fit[:len(train)],
                                                                                    x_fit[len(train):])
            imputation_s = time.perf_counter() - start
        c_train = self.encoder_.encode(age_tr, codes_tr)
        c_val = self.encoder_.encode(age_va, codes_va)
        torch.manual_seed(self.seed)
        net = build_backbone(self.backbone, len(idps), self.encoder_.dim,
                             **self._network_params(len(idps), n_rows=len(train)))
        denoiser = wrap_denoiser(net, self.schedule_, self.parameterisation)
        copula = None
        if self.copula_candidate and self.parameterisation == "gaussian-residual":  # the training rows alone:
            copula = GaussianCopulaResidual(net, self.schedule_, len(idps))        # validation judges it too
            copula.fit_correlation(torch.from_numpy(x_train_in[0]))
            untrained_state = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
        params = self.get_params()
        cfg = TrainConfig(**{f.name: params[f.name] for f in dataclasses.fields(TrainConfig) if f.name in params})
        state, history = train_denoiser(denoiser, x_train_in, c_train, x_val_in, c_val, self.schedule_, cfg, device,
                                        progress, untrained=copula, observed_train=observed_tr,
                                        observed_val=observed_va)
        denoiser.load_state_dict(state)  # with a copula candidate: the trained state early stopping kept
        self.prior_ = {}
        history["step0_denoiser"] = COPULA_PRIOR if copula is not None else "untrained network"
        self.net_ = net.to(device).eval()  # only now is the model fitted (a cancelled fit leaves none)
        try:
            if copula is not None:
                start = time.perf_counter()
                history.update(self._choose_copula_or_network(copula, x_val, age_va, codes_va, history, progress))
                if self.prior_:  # the copula runs around the untrained network, whose output is exactly 0
                    denoiser.load_state_dict(untrained_state)
                history["step0_choice_s"] = time.perf_counter() - start
            start = time.perf_counter()
            self.multivariate_calibration_ = self._calibrate_multivariate(x_val, y_all[len(train):], age_va, codes_va,
                                                                          progress)
        except BaseException:
            del self.net_
            self.prior_ = {}
            raise
        self.history_ = {**history, "multivariate_calibration_s": time.perf_counter() - start}
        self.training_summary_ = _training_summary(train, val, age, covariates, idps, dropped_rows)
        if observed_tr is not None:
            self.history_.update(imputed_completions=int(x_train_in.shape[0]), imputation_s=imputation_s)

    def _complete_latents(self, x_train: np.ndarray, x_val: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The network's inputs when some latents are missing (NaN): ``K`` completions of the training rows and one
        of the validation rows, drawn by a :class:`~normcore.tabular.imputation.LatentImputer` fitted to the training
        rows, and the masks of the observed entries (the loss counts only those). Complete latents pass through as
        they are, without masks. ``K`` is up to ``IMPUTED_COMPLETIONS``, fewer when the copies would exceed
        ``IMPUTATION_BYTES``."""
        observed_tr, observed_va = ~np.isnan(x_train), ~np.isnan(x_val)
        if observed_tr.all() and observed_va.all():
            return x_train[None], x_val, None, None
        imputer = LatentImputer(seed=self.seed).fit(x_train)
        k = int(np.clip(IMPUTATION_BYTES // max(4 * x_train.size, 1), 1, IMPUTED_COMPLETIONS))
        x_train_in = imputer.draw(x_train, k, seed=self.seed + 1).astype(np.float32)
        x_val_in = imputer.draw(x_val, 1, seed=self.seed + 2)[0].astype(np.float32)
        return x_train_in, x_val_in, observed_tr, observed_va

    def _choose_copula_or_network(self, copula: GaussianCopulaResidual, x_val: np.ndarray, age: np.ndarray,
                                  codes: np.ndarray, history: dict, progress: Progress) -> dict:
        """Keep the Gaussian copula (``prior_`` set to its correlation) or the trained network (``prior_`` empty).

        Early stopping's choice by the validation loss (``history["kept_step"]``; 0: the copula) stands unless it is
        the network and the copula's centiles are significantly better on the validation rows: their CRPS (a proper
        score of each IDP's predictive distribution, on the Gaussianised scale where every IDP weighs alike;
        ``STEP0_SAMPLES`` samples per row), averaged over the observed IDPs of each row, lower for the copula by a
        one-sided paired t-test over the rows at level ``STEP0_ALPHA`` (at most ``STEP0_ROWS`` rows). The test is made
        first on ``STEP0_INTERIM_ROWS`` rows and stops there for futility, keeping the network, when its p-value is
        above ``STEP0_FUTILITY_P`` (the copula's CRPS higher: the common case in large cohorts); stopping only for
        futility never keeps the copula more often than the one-stage test. The denoising
        loss weighs the joint distribution, mostly the dependence between IDPs; a small cohort's network can lower it
        while moving the centiles off, which the CRPS sees (BENCHMARKS.md). The test guards against the CRPS's own
        noise: between two close models its differences are small beside its sampling error. Both candidates draw the
        same noise (common random numbers); a network whose samples are not all finite loses. ``x_val`` holds
        out-of-sample latents (leave-one-out residuals; NaN where missing). Returns what the history records: the kept
        step and its loss, the step the loss preferred, and, when they were computed, both mean CRPS, the rows they
        were computed on (``val_crps_rows``) and the test's p-value."""
        out = {"loss_kept_step": history["kept_step"]}
        keep_copula = history["kept_step"] == 0
        if not keep_copula:
            staged = progress.as_stage(STEP0_STAGE)
            m = max(2, min(self.n_samples, STEP0_SAMPLES))
            n_rows = min(len(x_val), STEP0_ROWS)
            stages = [0, STEP0_INTERIM_ROWS, n_rows] if n_rows > STEP0_INTERIM_ROWS else [0, n_rows]
            crps = {"trained": [], "copula": []}
            for k, (start, stop) in enumerate(zip(stages[:-1], stages[1:], strict=True)):
                rows = slice(start, stop)
                for name, prior in (("trained", {}), ("copula", copula.prior_state())):
                    self.prior_ = prior
                    samples = self._draw(age[rows], codes[rows], m, self.seed + k, staged, to_values=False).numpy()
                    crps[name].append(np.nanmean(sample_crps(samples, x_val[rows].astype(float)), axis=1))
                gain = np.concatenate(crps["trained"]) - np.concatenate(crps["copula"])
                p = stats.ttest_1samp(gain, 0.0, alternative="greater").pvalue if len(gain) > 1 else np.nan
                if not (np.isfinite(gain).all() and p <= STEP0_FUTILITY_P):
                    break  # a network with non-finite samples loses; a clearly better one is kept without more rows
            for name, values in crps.items():
                out[f"val_crps_{name}"] = float(np.concatenate(values).mean())
            out["val_crps_rows"] = int(len(gain))
            if not np.isfinite(gain).all():
                keep_copula, out["val_crps_p"] = True, 0.0
            else:
                out["val_crps_p"] = float(p) if np.isfinite(p) else None  # the card is strict JSON
                keep_copula = bool(p < STEP0_ALPHA)  # nan (one row, or no spread) keeps the loss's choice
        self.prior_ = copula.prior_state() if keep_copula else {}
        return {**out, "kept_step": 0 if keep_copula else history["trained_step"],
                "kept_val_loss": history["initial_val_loss"] if keep_copula else history["trained_val_loss"]}

    def _calibrate_multivariate(self, x_val: np.ndarray, y_val: np.ndarray, age: np.ndarray, codes: np.ndarray,
                                progress: Progress) -> MultivariateCalibration | None:
        """The multivariate score's distribution on the validation rows, scored as new subjects with the model's
        default samples and with half as many (the first half of the same draw), at its seed
        (:mod:`~normcore.tabular.multivariate_calibration`); a row missing some IDPs gives its d2 over the observed
        ones. Their Gaussianised values ``x_val`` come from leave-one-out residuals, so neither the network nor the
        location-scale stage saw them; ``y_val``, their values in IDP units, tells which sit at a point mass."""
        if len(x_val) < MIN_CALIBRATION_ROWS or len(self.idps) > MAX_MULTIVARIATE_IDPS:
            return None
        staged = progress.as_stage(CALIBRATION_STAGE)
        missing = np.isnan(x_val)
        d2 = []
        counts = (self.n_samples, max(self.n_samples // 2, 1))
        for _, z, _, corr in self._score_with_sample_counts(x_val.astype(float), age, codes, counts, None, staged,
                                                            latent_values=True, bounds_of=y_val):
            z[missing] = np.nan  # a row's d2 is over its observed IDPs
            d2.append(multivariate_scores(z, corr, np.ones(len(self.idps), bool))[0])
        return MultivariateCalibration.fit(d2[0], d2[1], len(self.idps), self.n_samples,
                                           n_observed=(~missing).sum(axis=1))

    def _network_params(self, d: int, n_rows: int = 0, tensors: dict[str, torch.Tensor] | None = None) -> dict:
        """The backbone's keyword arguments: ``backbone_params`` with a FiLM-MLP's automatic per-IDP path width
        resolved, at fit time from the IDPs and training rows (:func:`~normcore.nets.film_mlp.auto_marginal_width`),
        at load from the saved weights (``tensors``), so the card need not name it."""
        params = dict(self.backbone_params)
        if self.backbone != "film-mlp" or params.get("marginal_width") is not None:
            return params
        params["marginal_width"] = (_saved_marginal_width(tensors) if tensors is not None
                                    else auto_marginal_width(d, n_rows))
        return params

    # ------------------------------------------------------------------ sampling core
    def _eps_fn(self):
        net = ZeroResidual() if self.prior_ else self.net_  # a kept copula is step 0: the untrained network adds 0
        return wrap_denoiser(net, self.schedule_, self.parameterisation, self.prior_ or None).to(self.device_).eval()

    def _max_rows(self) -> int:
        # CPU: small chunks keep the activations in cache (see BENCHMARKS.md)
        return 1 << 20 if self.device_.type == "cuda" else 1 << 12

    def _to_latent(self, y: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Original IDP units -> the Gaussianised scale the diffusion model works on (a value at an IDP's floor or
        ceiling: the edge of its share there, :mod:`~normcore.tabular.point_masses`)."""
        if self.location_scale_:
            mu, sd = self._location_scale_of(age, codes)
            r = (np.asarray(y, float) - mu) / sd
        else:
            r = y
        return self._bounds_in_latent(self.transformer_.transform(r), y)

    def _bounds_in_latent(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``x`` (latents of values ``y``) with the values at a floor or ceiling set to its latent value."""
        if not self._has_bounds():
            return x
        at_floor, at_ceiling = at_bounds(y, *self._bounds())
        edges = np.array([latent_bounds(*p.get("mass", (0.0, 0.0))) for p in self.transformer_.params])  # (D, 2)
        x = np.where(at_floor, edges[:, 0], x)
        return np.where(at_ceiling, edges[:, 1], x)

    def _to_values(self, x: np.ndarray, age: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Gaussianised scale -> original IDP units (the inverse of :meth:`_to_latent`): a latent in an IDP's floor
        (ceiling) share, and any value beyond it, is the floor (ceiling) (:mod:`~normcore.tabular.point_masses`)."""
        r = self.transformer_.inverse_transform(x)
        if self.location_scale_:
            mu, sd = self._location_scale_of(age, codes)
            r = r * sd + mu
        return clip_to_bounds(r, *self._bounds())

    def _bound_shares(self) -> np.ndarray:
        return np.array([p.get("mass", (0.0, 0.0)) for p in self.transformer_.params], float)

    @torch.no_grad()
    def _draw(self, age: np.ndarray, codes: np.ndarray, m: int, seed: int,
              progress: Progress | None = None, to_values: bool = True, independent: bool = False) -> torch.Tensor:
        """(U, m, D) samples in original IDP units at U covariate points (codes may marginalise); with
        ``to_values=False`` on the Gaussianised scale instead (only meaningful where no code marginalises: the
        map to IDP units is then the same for all of a point's samples). A point's m samples are one quasi-random
        set when ``sampling_noise`` is ``"sobol"``, unless ``independent`` asks for independent samples."""
        self._check_fitted()
        progress = as_progress(progress)
        gen_np = np.random.default_rng(seed)
        device = self.device_
        gen = torch.Generator(device=device).manual_seed(seed)
        d = len(self.idps)
        u = len(age)
        out = torch.empty((u, m, d), dtype=torch.float64)
        adapted = self.encoder_.adapted_mask(codes)  # levels the network never saw: it gets training levels
        marg = ((codes == MARGINALISE) | adapted).any(axis=1) if codes.size else np.zeros(u, bool)
        per_chunk = max(1, self._max_rows() // m)
        chunks = [(s, min(s + per_chunk, u)) for s in range(0, u, per_chunk)]
        eps_fn = self._eps_fn()
        quasi = self.sampling_noise == "sobol" and not independent and m > 1
        eta = self._sampler_eta()
        sobol = ScrambledSobol(m, d, noise_draws(self.sampler, self.sampling_steps, eta), gen) if quasi else None
        for done, (s, e) in enumerate(chunks):
            a, c, mg = age[s:e], codes[s:e], marg[s:e]
            rep_age = np.repeat(a, m)
            noise = sobol.noise(e - s, gen) if sobol else None
            if not mg.any():
                cond = torch.from_numpy(self.encoder_.encode(a, c)).to(device)
                x = run_sampler(eps_fn, self.schedule_, cond, (e - s, m, d), self.sampler,
                                self.sampling_steps, eta, gen, self.clip_x0, noise, self.log_snr_start)
                rep_codes = np.repeat(c, m, axis=0)
            else:  # each sample draws its own level for marginalised covariates (and the network's for adapted)
                rep_codes = np.repeat(c, m, axis=0)
                rep_adapted = np.repeat(adapted[s:e], m, axis=0)
                net_codes = self.encoder_.resolve_marginalised(np.where(rep_adapted, MARGINALISE, rep_codes), gen_np)
                rep_codes = np.where(rep_adapted, rep_codes, net_codes)
                cond = torch.from_numpy(self.encoder_.encode(rep_age, net_codes)).to(device)
                x = run_sampler(eps_fn, self.schedule_, cond, ((e - s) * m, 1, d), self.sampler,
                                self.sampling_steps, eta, gen, self.clip_x0, noise, self.log_snr_start)
            x = x.reshape(-1, d).double().cpu().numpy()
            values = self._to_values(x, rep_age, rep_codes) if to_values else x
            out[s:e] = torch.from_numpy(values).reshape(e - s, m, d)
            progress.update("sample", done + 1, len(chunks))
        return out

    # ------------------------------------------------------------------ adaptation of the network's input
    def _has_network_input(self) -> bool:
        return True

    def _network_sees(self, col: str) -> bool:
        return not self.prior_ and super()._network_sees(col)  # a kept copula runs no network

    def _adapt_network_input(self, col: str, code: int, age: np.ndarray, codes: np.ndarray, y: np.ndarray,
                             progress: Progress) -> dict:
        """Fit the network's input for adapted level ``code`` of ``col`` on its controls, all else frozen.

        The input is a mixture of the trained levels' one-hot inputs (softmax weights, starting at the
        training frequencies, i.e. near the centre of the trained levels), fitted by the denoising loss of
        the controls' residuals (after the adapted location-scale stage) with the network's weights fixed.
        Absent IDPs are left out of the loss. Returns what the card records of the fit.
        """
        k = self.encoder_.categorical.index(col)
        block = self.encoder_.block(col)
        gen_np = np.random.default_rng(self.seed)
        x = spread_beyond_bounds(self._to_latent(y, age, codes), *at_bounds(y, *self._bounds()), self.seed + 3)
        present = torch.from_numpy(~np.isnan(x))
        x = torch.from_numpy(np.nan_to_num(x, nan=0.0)).float()
        base = codes.copy()
        base[:, k] = 0
        base = np.where(self.encoder_.adapted_mask(base), MARGINALISE, base)  # other adapted levels: marginal
        cond = torch.from_numpy(self.encoder_.encode(age, self.encoder_.resolve_marginalised(base, gen_np)))
        cond[:, block] = 0.0
        freq = np.asarray(self.encoder_.frequencies[col][:block.stop - block.start], float)
        logits = torch.tensor(np.log(np.maximum(freq / freq.sum(), 1e-6)), dtype=torch.float32, requires_grad=True)
        eps_fn = self._eps_fn()
        frozen = [p.requires_grad for p in eps_fn.parameters()]
        for p in eps_fn.parameters():
            p.requires_grad_(False)
        device = self.device_
        repeats = max(1, ADAPT_INPUT_ROWS // len(x))
        xr, cr, mask = x.repeat(repeats, 1).to(device), cond.repeat(repeats, 1).to(device), \
            present.repeat(repeats, 1).to(device)
        gen = torch.Generator(device=device).manual_seed(self.seed)
        opt = torch.optim.Adam([logits], lr=ADAPT_INPUT_LR)
        losses = []
        try:
            for step in range(ADAPT_INPUT_STEPS):
                t = torch.randint(0, self.schedule_.timesteps, (len(xr),), generator=gen, device=device)
                noise = torch.randn(xr.shape, generator=gen, device=device)
                c = cr.clone()
                c[:, block] = torch.softmax(logits, 0).to(device)
                pred = eps_fn(self.schedule_.add_noise(xr, noise, t), t, c).float()
                loss = (((pred - noise) ** 2) * mask).sum() / mask.sum().clamp(min=1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                if step % 10 == 9:
                    progress.update("adapt network input", step + 1, ADAPT_INPUT_STEPS)
        finally:
            for p, flag in zip(eps_fn.parameters(), frozen, strict=True):
                p.requires_grad_(flag)
        weights = torch.softmax(logits.detach(), 0).double().numpy()
        self.encoder_.set_embedding(col, self.encoder_.levels[col][code], weights / weights.sum())
        top = np.argsort(weights)[::-1][:3]
        return {"network_input": "embedding", "steps": ADAPT_INPUT_STEPS,
                "loss_first_last": [round(float(np.mean(losses[:10])), 4), round(float(np.mean(losses[-10:])), 4)],
                "nearest_training_levels": {self.encoder_.levels[col][i]: round(float(weights[i]), 3) for i in top}}

    # ------------------------------------------------------------------ model cores (see NormativeModel)
    def _sample_core(self, age, codes, n, seed, progress) -> np.ndarray:
        seed = self.seed if seed is None else seed
        return self._draw(age, codes, n, seed, progress, independent=True).numpy()

    def _point_chunks(self, n_points: int, m: int, seed: int, breaks: tuple[int, ...] = (),
                      max_points: int = POINTS_PER_CHUNK) -> list[tuple[int, int, int]]:
        """(start, stop, seed) of the chunks in which ``n_points`` covariate points are sampled, ``m`` samples each.

        A chunk holds at most ``SCORE_SAMPLE_BYTES`` of samples and ``max_points`` points and never spans
        one of ``breaks``; the first draws from ``seed``, chunk i from ``seed + 7919 i``. Chunks never depend on
        the number of processes, so ``torchrun`` ranks can share them (:mod:`normcore._utils.distributed`) and
        reproduce a one-process run.
        """
        per_chunk = max(1, min(max_points, SCORE_SAMPLE_BYTES // (m * len(self.idps) * 8)))
        edges = sorted({0, n_points, *(b for b in breaks if 0 < b < n_points)})
        spans = [(s, min(s + per_chunk, hi))
                 for lo, hi in zip(edges, edges[1:], strict=False) for s in range(lo, hi, per_chunk)]
        return [(s, e, seed if ci == 0 else seed + 7919 * ci) for ci, (s, e) in enumerate(spans)]

    def _score_points(self, age: np.ndarray, codes: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """The covariate points scoring samples at: (ages, codes, each row's two points (n, 2), their weights (n, 2),
        number of latent points).

        Rows whose covariates all name a level are compared with samples on the Gaussianised scale, where their
        own value is mapped at their exact age, so they can share samples drawn on a grid of ages: the multiples
        of ``score_age_resolution`` years (by default ``SCORE_AGE_RESOLUTION`` of the training age range). Each
        such row has a point at its nearest grid age and its levels. Where the grid age on its other side is
        also a point (another row's nearest), the row is scored against both, its centile the mixture of the two
        with weights linear in its age (:func:`~normcore.tabular.scoring.mix_scores`); else against its nearest
        alone. So interpolation adds no points. The age effect on location and scale stays exact; the network's
        residual shape, which changes slowly with age, is shared or interpolated (its measured effect:
        BENCHMARKS.md). Batch covariates (``batch_covariates``) act on location and scale alone, so rows of all
        their levels share these points. Grid ages are clipped to the training age range for ages inside it, so
        that no in-range subject is compared with samples drawn outside the range. These "latent" points come
        first. Rows with a marginalised covariate keep their exact age and are compared in IDP units (each sample
        maps with its own level). A row with one point has weights (1, 0) and that point twice.
        """
        n = len(age)
        latent_row = ~(codes == MARGINALISE).any(axis=1) if codes.size else np.ones(n, bool)
        lo, hi = self.age_range_
        step = SCORE_AGE_RESOLUTION * (hi - lo) if self.score_age_resolution is None else self.score_age_resolution
        near = other = age
        if step > 0:
            inside = (age >= lo) & (age <= hi)

            def grid(k: np.ndarray) -> np.ndarray:  # each grid age computed one way, so equal ones compare equal
                return np.where(inside, np.clip(k * step, lo, hi), k * step)

            k = np.round(age / step)
            near = np.where(latent_row, grid(k), age)
            other = np.where(latent_row, grid(np.where(age >= k * step, k + 1, k - 1)), age)
        codes2 = codes if codes.size else np.zeros((n, 0))
        batch = self.encoder_.batch_columns
        if batch:  # the network never sees a batch covariate: its levels share a latent point (code 0 stands in)
            codes2 = codes2.copy()
            codes2[np.ix_(latent_row, batch)] = 0
        flag = (~latent_row).astype(float)
        uniq, inverse = np.unique(np.column_stack([flag, near, codes2]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)  # latent points (flag 0) sort first
        both, where = np.unique(np.vstack([uniq, np.column_stack([flag, other, codes2])]), axis=0,
                                return_inverse=True)
        point_of = np.full(len(both), -1)
        point_of[where.reshape(-1)[:len(uniq)]] = np.arange(len(uniq))
        other_point = point_of[where.reshape(-1)[len(uniq):]]  # -1: the other grid age is not a point
        span = np.abs(other - near)
        two = (other_point >= 0) & (span > 0)
        w = np.where(two, np.abs(age - near) / np.where(span > 0, span, 1.0), 0.0)
        pair = np.column_stack([inverse, np.where(two, other_point, inverse)])
        return uniq[:, 1], uniq[:, 2:].astype(np.int64), pair, np.column_stack([1.0 - w, w]), \
            int((uniq[:, 0] == 0).sum())

    def _score_core(self, y, age, codes, n_samples, seed, progress, latent_values: bool = False):
        """Randomised PIT against M samples shared by the rows of a covariate point (:meth:`_score_points`: same
        levels and age bin, compared on the Gaussianised scale); copula correlation. ``latent_values``: ``y`` is
        on the Gaussianised scale already (every code names a level).

        Distinct covariate points are sampled in chunks (:meth:`_point_chunks`), so memory stays bounded
        whatever the table's length, and under ``torchrun`` each rank scores its share of the chunks. The
        copula correlation is kept per point while all of them fit in ``CORRELATION_BYTES``; beyond that one
        correlation pooled over the points serves every row; above ``MAX_MULTIVARIATE_IDPS`` IDPs there is
        none (both said in the result's note).
        """
        m = int(n_samples or self.n_samples)
        return self._score_with_sample_counts(y, age, codes, (m,), seed, progress, latent_values)[0]

    def _score_with_sample_counts(self, y, age, codes, counts: tuple[int, ...], seed, progress,
                                  latent_values: bool = False, bounds_of: np.ndarray | None = None) -> list[tuple]:
        """:meth:`_score_core`'s result once per sample count of ``counts``, from one draw of the largest: the scores
        with fewer samples use the first that many of each point's samples (a quasi-random set's first points are
        one too), as a scoring with that many would draw them, at a fraction of the sampling.

        A value at its IDP's floor (ceiling) ties with every sample in the floor's (ceiling's) share: the samples
        are censored there (:mod:`~normcore.tabular.point_masses`); the tail model does not score it.
        ``bounds_of``: the values in IDP units when ``y`` is on the Gaussianised scale (``latent_values``)."""
        m = max(counts)
        seed = self.seed if seed is None else seed
        d = len(self.idps)
        u_age, u_codes, pair, weight, n_latent = self._score_points(age, codes)
        n_points, n = len(u_age), len(y)
        latent_rows = pair[:, 0] < n_latent
        observed = y.copy()  # each row's values on the scale of its points' samples
        if latent_rows.any() and not latent_values:
            observed[latent_rows] = self._to_latent(y[latent_rows], age[latent_rows], codes[latent_rows])
        # a row between two grid ages is scored twice (copies n.. of the rows with two points), then mixed
        two = np.flatnonzero(weight[:, 1] > 0)
        row_of = np.concatenate([np.arange(n), two])
        inverse = np.concatenate([pair[:, 0], pair[two, 1]])
        multivariate = d <= MAX_MULTIVARIATE_IDPS
        pooled = multivariate and n_points * d * d * 8 > CORRELATION_BYTES
        note = None
        if not multivariate:
            note = (f"no multivariate score: {d} IDPs is over the {MAX_MULTIVARIATE_IDPS} for which a D x D "
                    "correlation is estimated")
        elif pooled:
            note = (f"{n_points} distinct covariate points x {d} IDPs: one copula correlation pooled over the "
                    "points serves the multivariate score (memory bound)")
        observed_c, age_c, codes_c = observed[row_of], age[row_of], codes[row_of]
        bound_masks = floor_t = ceiling_t = None  # which values sit at a bound: none without bounds (or IDP units)
        if self._has_bounds() and (bounds_of is not None or not latent_values):
            at_floor, at_ceiling = at_bounds(y if bounds_of is None else bounds_of, *self._bounds())
            bound_masks = at_floor[row_of], at_ceiling[row_of]
            floor_t, ceiling_t = (torch.from_numpy(mask) for mask in bound_masks)
        y_t = torch.from_numpy(np.nan_to_num(observed_c, nan=0.0))
        v = torch.from_numpy(np.random.default_rng(seed + 1).random(y.shape)[row_of])
        sets = [{"centile": np.zeros(observed_c.shape),  # zeros where another rank scores (see sum_across_ranks)
                 "z": np.zeros(observed_c.shape), "beyond": np.zeros(observed_c.shape, bool),
                 "per_point": np.zeros((n_points, d, d)) if multivariate and not pooled else None,
                 "pooled_sum": np.zeros((d, d)) if pooled else None} for _ in counts]
        order = np.argsort(inverse, kind="stable")
        chunks = self._point_chunks(n_points, m, seed, breaks=(n_latent,))
        bounds = np.searchsorted(inverse[order], [s for s, _, _ in chunks] + [n_points])
        for ci in owned_chunks(len(chunks)):
            s, e, chunk_seed = chunks[ci]
            latent = s < n_latent
            drawn = self._draw(u_age[s:e], u_codes[s:e], m, chunk_seed, progress, to_values=not latent)
            rows = order[bounds[ci]:bounds[ci + 1]]
            for count, out in zip(counts, sets, strict=True):
                samples = drawn if count == m else drawn[:, :count].contiguous()
                sorted_s, sort_order = samples.transpose(1, 2).sort(dim=-1)  # (points, D, count)
                sorted_s = sorted_s.contiguous()
                step = max(1, (1 << 22) // (count * d))
                for r in range(0, len(rows), step):
                    sub = rows[r:r + step]
                    uu, bb = randomised_pit(sorted_s[inverse[sub] - s].contiguous(), y_t[sub], v[sub],
                                            *((floor_t[sub], ceiling_t[sub]) if bound_masks else ()))
                    out["centile"][sub], out["beyond"][sub] = uu.numpy(), bb.numpy()
                    out["z"][sub] = special.ndtri(out["centile"][sub])
                self._tail_scores(sorted_s, u_age[s:e], u_codes[s:e], rows, inverse[rows] - s, observed_c, age_c,
                                  codes_c, out["z"], out["centile"], latent, bound_masks)
                if multivariate:
                    corr = copula_correlation(samples, sort_order).numpy()
                    if pooled:
                        out["pooled_sum"] += corr.sum(axis=0)
                    else:
                        out["per_point"][s:e] = corr
                del samples, sorted_s, sort_order
            del drawn
        results = []
        for out in sets:
            centile, z, beyond, per_point, pooled_sum = (out[k] for k in ("centile", "z", "beyond", "per_point",
                                                                            "pooled_sum"))
            sum_across_ranks(*(a for a in (centile, z, beyond, per_point, pooled_sum) if a is not None))
            if len(two):  # mix each row's two scores (copies n.. are the second points of rows ``two``)
                w = weight[two]
                centile[two], z[two] = mix_scores(centile[two], z[two], centile[n:], z[n:], w[:, 1:])
                beyond[two] &= beyond[n:]
            centile, z, beyond = centile[:n], z[:n], beyond[:n]
            if pooled:
                results.append((centile, z, beyond,
                                PointCorrelations((pooled_sum / n_points)[None], np.zeros(n, np.int64), note)))
            else:
                nearest = np.where(weight[:, 1] > 0.5, pair[:, 1], pair[:, 0])
                results.append((centile, z, beyond, PointCorrelations(per_point, nearest, note)))
        return results

    def _tail_scores(self, sorted_s: torch.Tensor, p_age: np.ndarray, p_codes: np.ndarray, rows: np.ndarray,
                     points: np.ndarray, y: np.ndarray, age: np.ndarray, codes: np.ndarray, z: np.ndarray,
                     centile: np.ndarray, latent: bool = False,
                     at_bounds_: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Overwrite z (and centile) of ``rows``' values beyond a tail anchor with the tail model's
        (:func:`~normcore.tabular.scoring.tail_z`), fitted at each covariate point on the scale ``tail_scale`` names.

        ``latent`` points' samples and values are on the Gaussianised scale; other points' (marginalised levels)
        are in IDP units. For "gaussianised" the latter are mapped there; for "residual" the former are mapped back
        through the quantile transform to the location-scale residual (IDP units at a point, up to an increasing
        affine map), and IDP units are used as they are. Rows are taken in blocks of ``TAIL_BLOCK_VALUES`` values,
        so memory stays bounded however many rows (or values beyond the anchors) a chunk of points has.
        ``at_bounds_``: masks of the values at their IDP's floor and ceiling, which no tail scores."""
        residual = self.tail_scale == "residual"
        m, d = sorted_s.shape[-1], sorted_s.shape[1]
        k, lo_idx, hi_idx = tail_ranks(m, TAIL_FIT_FROM[self.tail_scale])
        if k == 0:
            return
        anchors = sorted_s[:, :, [k - 1, m - k]].numpy()  # (P, D, 2)
        idx = np.concatenate([lo_idx, hi_idx])
        order_stats = None
        block = max(1, TAIL_BLOCK_VALUES // d)
        for r in range(0, len(rows), block):
            rb, pb = rows[r:r + block], points[r:r + block]
            yr = y[rb]
            edges = anchors[pb]  # (rows, D, 2)
            below, above = yr < edges[..., 0], yr > edges[..., 1]  # NaN compares False: missing values stay out
            if at_bounds_ is not None:  # a value at a bound ties with its share of the samples: no tail scores it
                bound = at_bounds_[0][rb] | at_bounds_[1][rb]
                below &= ~bound
                above &= ~bound
            if not (below.any() or above.any()):
                continue
            if order_stats is None:  # the order statistics of the chunk's points, on the values' scale
                order_stats = self._tail_order_stats(sorted_s, idx, np.unique(points), p_age, p_codes, latent)
            x = yr
            if residual and latent:
                x = self.transformer_.inverse_transform(yr)
            elif not residual and not latent:
                x = self._to_latent(yr, age[rb], codes[rb])
            for mask, part, upper in ((below, slice(0, len(lo_idx)), False), (above, slice(len(lo_idx), None), True)):
                i, j = np.nonzero(mask)
                if not i.size:
                    continue
                ranks = lo_idx if not upper else hi_idx
                zt = tail_z(order_stats[pb[i], part, j], ranks, m, x[i, j], upper)
                z[rb[i], j] = zt
                centile[rb[i], j] = special.ndtr(zt)

    def _tail_order_stats(self, sorted_s: torch.Tensor, idx: np.ndarray, need: np.ndarray, p_age: np.ndarray,
                          p_codes: np.ndarray, latent: bool) -> np.ndarray:
        """Order statistics ``idx`` of the points ``need`` (rows ``need`` of a (P, len(idx), D) array, the others
        unset) on the scale the tail is fitted on (:meth:`_tail_scores`)."""
        d = sorted_s.shape[1]
        picked = sorted_s[:, :, idx][need].permute(0, 2, 1).reshape(-1, d).numpy()  # (P * J, D)
        if self.tail_scale == "residual" and latent:
            picked = self.transformer_.inverse_transform(picked)
        elif self.tail_scale != "residual" and not latent:
            picked = self._to_latent(picked, np.repeat(p_age[need], len(idx)),
                                     np.repeat(p_codes[need], len(idx), axis=0))
        order_stats = np.empty((len(sorted_s), len(idx), d))
        order_stats[need] = picked.reshape(len(need), len(idx), d)
        return order_stats

    def _quantile_core(self, ages, codes, quantiles, n_samples, seed, progress) -> np.ndarray:
        """Sample quantiles; defaults to max(n_samples, 4000) samples per age (quantile error ~ 1/sqrt(M)).
        Computed chunk by chunk of ages (:meth:`_point_chunks`; shared by ``torchrun`` ranks)."""
        m = int(n_samples or max(self.n_samples, 4000))
        seed = self.seed if seed is None else seed
        q = torch.as_tensor(quantiles, dtype=torch.float64)
        out = np.zeros((len(q), len(ages), len(self.idps)))
        chunks = self._point_chunks(len(ages), m, seed)
        for ci in owned_chunks(len(chunks)):
            s, e, chunk_seed = chunks[ci]
            samples = self._draw(ages[s:e], codes[s:e], m, chunk_seed, progress)
            out[:, s:e] = torch.quantile(samples, q, dim=1).numpy()  # (Q, points, D)
        sum_across_ranks(out)
        return out

    def predict_quantiles(self, df: pd.DataFrame, quantiles: tuple[float, ...], n_samples: int | None = None,
                          seed: int | None = None, progress: Progress | None = None,
                          points_per_chunk: int = POINTS_PER_CHUNK) -> np.ndarray:
        """(Q, n, D) predictive quantiles in IDP units at each row's covariates, from max(``n_samples``, 4000)
        samples (as :meth:`centiles`) at each of scoring's points (:meth:`_grid_summaries`), so the cost grows with
        the age grid, not the rows. ``points_per_chunk`` caps the points sampled at once (memory)."""
        self._check_call(n_samples, seed)
        q = checked_quantiles(quantiles)
        return self._grid_summaries(df, q, int(n_samples or max(self.n_samples, 4000)), seed, progress,
                                    moments=False, max_points=points_per_chunk)[0]

    def predict_moments(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and variance (n, D) in IDP units at each row's covariates (for EXPV/SMSE/MSLL), from
        ``n_samples`` (default the model's) samples at each of scoring's points (:meth:`_grid_summaries`)."""
        mixture = self.predict_mixture(df, n_samples, seed, progress)
        return mixture.mean, mixture.var

    def predict_mixture(self, df: pd.DataFrame, n_samples: int | None = None, seed: int | None = None,
                        progress: Progress | None = None) -> PredictiveMixture:
        """Each row's predictive floor and ceiling probabilities and body moments in IDP units, from ``n_samples``
        (default the model's) samples at each of scoring's points (:meth:`_grid_summaries`)."""
        return self._grid_summaries(df, np.empty(0), int(n_samples or self.n_samples), seed, progress,
                                    moments=True)[1]

    def predict_quantiles_and_moments(self, df: pd.DataFrame, quantiles: tuple[float, ...],
                                      n_samples: int | None = None, seed: int | None = None,
                                      progress: Progress | None = None
                                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_quantiles` and the mean and variance of the same max(``n_samples``, 4000) samples at each
        point, drawn once (the PCNtoolkit export needs both)."""
        self._check_call(n_samples, seed)
        q = checked_quantiles(quantiles)
        quant, mixture = self._grid_summaries(df, q, int(n_samples or max(self.n_samples, 4000)), seed, progress,
                                              moments=True)
        return quant, mixture.mean, mixture.var

    def _grid_summaries(self, df: pd.DataFrame, q: np.ndarray, m: int, seed: int | None,
                        progress: Progress | None, moments: bool, max_points: int = POINTS_PER_CHUNK
                        ) -> tuple[np.ndarray, PredictiveMixture | None]:
        """Quantiles ``q`` (Q, n, D) and, with ``moments``, each row's predictive distribution in IDP units as a
        :class:`~normcore.tabular.predictive_mixture.PredictiveMixture` (else None), under the samples scoring
        compares the row with (:meth:`_score_points`).

        ``m`` samples are drawn at each of scoring's points; for the rows whose covariates all name a level (the
        latent points) they are taken to the location-scale residual, which each row's own location and scale
        (increasing and affine) place in IDP units at its exact age and levels. Quantiles are taken on the
        Gaussianised scale and mapped back (the map is increasing, so it carries quantiles over). A row between
        two grid points gets the moments of the two points' mixture with scoring's weights (each point's variance
        unbiased, ddof 1) and the two points' quantiles interpolated with the same weights, linear in its age; the
        quantile of the mixture itself, which scoring's centiles use, differs from that by an amount second-order
        in the gap between the two points' shapes (measured: BENCHMARKS.md); where one point's quantile lies in a
        floor's (ceiling's) share, the row's is the floor (ceiling). Rows with a marginalised covariate
        take their exact point's samples in IDP units. Quantiles are censored at the IDPs' floors and ceilings
        (:mod:`~normcore.tabular.point_masses`), and the mixture holds each row's shares at its floor and its
        ceiling and its body's moments (each point's, mixed with the same weights; the body's moments rest on about
        the body's share of ``m`` samples). The cost grows with the points, not with the rows; chunks of points are
        shared by ``torchrun`` ranks as scoring's are."""
        self._check_fitted()
        age, codes = self._covariates_of(df, "table")
        u_age, u_codes, pair, weight, n_latent = self._score_points(age, codes)
        d, n_points = len(self.idps), len(u_age)
        progress = as_progress(progress)
        q_t = torch.as_tensor(q, dtype=torch.float64)
        point_q = np.zeros((len(q), n_points, d))
        point_mean, point_var = np.zeros((2, n_points, d)) if moments else (None, None)
        bounded = moments and self._has_bounds()
        point_lo, point_hi = np.zeros((2, n_points, d)) if bounded else (None, None)  # shares at floor / ceiling
        chunks = self._point_chunks(n_points, m, self.seed if seed is None else seed, breaks=(n_latent,),
                                    max_points=max_points)
        stage = progress.as_stage("centiles" if len(q) else "moments")  # per sampler call; restarts each chunk
        for ci in owned_chunks(len(chunks)):
            s, e, chunk_seed = chunks[ci]
            latent = s < n_latent
            samples = self._draw(u_age[s:e], u_codes[s:e], m, chunk_seed, stage, to_values=not latent)
            if len(q):
                values = torch.quantile(samples, q_t, dim=1).numpy()  # (Q, points, D)
                if latent:  # a level in a floor's or ceiling's share maps to -inf / +inf: far beyond, clipped below
                    values = self.transformer_.inverse_transform(values.reshape(-1, d)).reshape(values.shape)
                point_q[:, s:e] = np.nan_to_num(values, posinf=FAR_BEYOND, neginf=-FAR_BEYOND)
            if moments:
                x = samples.numpy()
                if latent:
                    x = self.transformer_.inverse_transform(x.reshape(-1, d)).reshape(x.shape)
                if bounded:  # the body's moments; the shares at the bounds apart (their values are exact)
                    lo, hi = np.isneginf(x), np.isposinf(x)
                    point_lo[s:e], point_hi[s:e] = lo.mean(axis=1), hi.mean(axis=1)
                    point_mean[s:e], point_var[s:e] = _body_moments(np.where(lo | hi, np.nan, x))
                else:
                    point_mean[s:e], point_var[s:e] = x.mean(axis=1), x.var(axis=1, ddof=1)
        sum_across_ranks(*(a for a in (point_q, point_mean, point_var, point_lo, point_hi) if a is not None))
        w_a, w_b = weight[:, :1], weight[:, 1:]
        a, b = pair[:, 0], pair[:, 1]
        quant = np.empty((len(q), len(age), d))
        for k in range(len(q)):  # one level at a time: no (Q, n, 2, D) intermediate
            quant[k] = w_a * point_q[k, a] + w_b * point_q[k, b]
        mean = var = body = None
        if moments:
            body_a, body_b = w_a, w_b  # each point's weight in the row's body (its values between the bounds)
            if bounded:
                body_a, body_b = w_a * (1 - point_lo[a] - point_hi[a]), w_b * (1 - point_lo[b] - point_hi[b])
            body = body_a + body_b
            share = np.where(body > 0, body, 1.0) if bounded else 1.0
            mean = (body_a * point_mean[a] + body_b * point_mean[b]) / share
            second = body_a * (point_var[a] + point_mean[a] ** 2) + body_b * (point_var[b] + point_mean[b] ** 2)
            var = np.maximum(second / share - mean**2, 0.0)
        rows = pair[:, 0] < n_latent
        if self.location_scale_ is not None and rows.any():
            mu, sd = self._location_scale_of(age[rows], codes[rows])
            quant[:, rows] = mu + sd * quant[:, rows]
            if moments:
                mean[rows], var[rows] = mu + sd * mean[rows], var[rows] * sd**2
        mixture = None
        if bounded:  # the row's mixture of its floor, its ceiling and its body
            mixture = PredictiveMixture(*self._bounds(), w_a * point_lo[a] + w_b * point_lo[b],
                                        w_a * point_hi[a] + w_b * point_hi[b], mean, var, body_samples=body * m)
        elif moments:
            mixture = PredictiveMixture.continuous(mean, var)
        return clip_to_bounds(quant, *self._bounds()), mixture

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        prior = {PRIOR_PREFIX + name: tensor for name, tensor in self.prior_.items()}
        return {**self.net_.state_dict(), **prior}, {
            "transformer": self.transformer_.to_dict(),
            "location_scale": self.location_scale_.to_dict() if self.location_scale_ else None,
            "schedule": self.schedule_.to_dict(),
            "point_masses": {**bounds_to_dict(*self._bounds()),
                             "pooled_body": {str(j): list(v) for j, v in getattr(self, "pooled_body_", {}).items()}},
            "denoiser_prior": COPULA_PRIOR if self.prior_ else STANDARD_PRIOR}

    def _versions(self) -> dict:
        return {"fitted_on": describe_device(self.device_)}

    def save(self, path):
        """Save weights (safetensors) and card (JSON) atomically; in a distributed fit only rank 0 writes."""
        if distributed_context()[0] != 0:
            return path
        return super().save(path)

    def _restore(self, tensors: dict[str, torch.Tensor], card: dict, path: str) -> None:
        self.transformer_ = IDPTransformer.from_dict(card["transformer"])
        ls = card.get("location_scale")
        self.location_scale_ = LocationScale.from_dict(ls) if ls else None
        self.schedule_ = NoiseSchedule(card["schedule"]["kind"], card["schedule"]["timesteps"])
        self.floor_, self.ceiling_ = bounds_from_dict(card.get("point_masses"), len(self.idps))
        self.pooled_body_ = {int(j): tuple(v) for j, v in (card.get("point_masses") or {}).get("pooled_body",
                                                                                           {}).items()}
        try:
            self.device_ = resolve_device(self.device)
        except ValueError:  # e.g. fitted with device="cuda", loaded on a machine without a GPU
            self.load_notes_ = [f"the model was saved for device {self.device!r}, which this machine lacks: "
                                "it runs on the CPU"]
            self.device = "auto"
            self.device_ = resolve_device("auto")
        tensors = dict(tensors)
        self.prior_ = {key.removeprefix(PRIOR_PREFIX): tensors.pop(key)
                       for key in list(tensors) if key.startswith(PRIOR_PREFIX)}
        if card.get("denoiser_prior", STANDARD_PRIOR) == COPULA_PRIOR:
            try:
                GaussianCopulaResidual.check_prior_state(self.prior_, len(self.idps))
            except ValueError as exc:
                raise InputError(f"{path}: the card's denoiser is the Gaussian copula, but {exc}") from None
        elif self.prior_:
            raise InputError(f"{path}: the weights hold a Gaussian copula that the card does not name")
        net = build_backbone(self.backbone, len(self.idps), self.encoder_.dim,
                             **self._network_params(len(self.idps), tensors=tensors))
        try:
            net.load_state_dict(tensors)
        except RuntimeError as exc:
            raise InputError(f"{path}: weights do not match the model card ({str(exc).splitlines()[0]})") from None
        self.net_ = net.to(self.device_).eval()


FAR_BEYOND = 1e150
"""Stands for the -inf / +inf of a quantile in a floor's or ceiling's share while rows' quantiles are interpolated
(0 x inf would be NaN) and scaled by a row's spread (small enough not to overflow); clipped to the bound afterwards."""


def _body_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance over axis 1 of ``x`` (points, samples, D), NaN left out (0 where fewer than two
    values: their weight in any mixture is then at most one sample's)."""
    count = (~np.isnan(x)).sum(axis=1)
    mean = np.nansum(x, axis=1) / np.maximum(count, 1)
    var = np.nansum((x - mean[:, None]) ** 2, axis=1) / np.maximum(count - 1, 1)
    return mean, np.where(count > 1, var, 0.0)


def _training_summary(train: pd.DataFrame, val: pd.DataFrame, age: str, covariates: list[str],
                      idps: list[str], dropped_rows: int) -> dict:
    both = pd.concat([train, val])
    gaps = both[idps].isna()
    incomplete = {}
    if gaps.to_numpy().any():
        unmeasured = {}  # covariate -> level -> IDPs none of the level's training rows has (see LocationScale)
        for c in covariates:
            labels = both[c].map(category_label)
            seen = (~gaps).groupby(labels.to_numpy()).any()
            found = {str(level): [idps[j] for j in np.flatnonzero(~row)] for level, row in zip(
                seen.index, seen.to_numpy(), strict=True) if not row.all()}
            if found:
                unmeasured[c] = found
        incomplete = {"incomplete_rows": int(gaps.any(axis=1).sum()),  # rows kept though missing some IDP values
                      "missing_idp_values": round(float(gaps.to_numpy().mean()), 6),
                      **({"unmeasured_levels": unmeasured} if unmeasured else {})}
    return {
        "n_train": int(len(train)),
        "n_validation": int(len(val)),
        "dropped_rows": int(dropped_rows),
        **incomplete,
        "age": {"min": float(both[age].min()), "max": float(both[age].max()), "mean": float(both[age].mean())},
        "levels": {c: both[c].map(category_label).value_counts().sort_index().astype(int).to_dict()
                   for c in covariates},
        "idp_mean": {c: float(both[c].mean()) for c in idps},
        "idp_std": {c: float(both[c].std()) for c in idps},
        "timestamp": time.time(),
    }

"""Normative diffusion autoencoder of T1 scans: a semantic latent, its normative deviation, counterfactual ageing.

A diffusion autoencoder (DiffAE, Preechakul et al. 2022) on the first-stage latents of :mod:`.latent_space`: a
semantic encoder maps a scan's latent to a compact vector (what the brain looks like), and a conditional latent
denoiser, trained jointly with it, reconstructs the latent from noise given that vector, age and sex. Deterministic
DDIM inversion gives each scan a stochastic code (the detail the vector leaves out); decoding the code with the
same conditions reconstructs the scan, and with another age a counterfactual of the same brain.

Normative use (after Ijishakin et al., ALS): the tabular engine (:class:`~normcore.tabular.NormativeDiffusion`)
is fitted to the healthy training scans' semantic vectors given age and sex, so a scan gets a z per dimension and a
multivariate deviation whose centile is its rank among the healthy validation scans; the paper's score, the cosine
similarity of the vector to the mean of age- and sex-matched healthy training vectors, is given beside it.

Brain age (:mod:`.brain_age`, fitted by :class:`~.latent_space.LatentSpaceModel`): a ridge read-out of age from
the first-stage latent gives every scan a brain-age gap and its healthy centile, the field's standard whole-brain
marker of diffuse change, beside the semantic deviation.

Counterfactual modes: ``"condition"`` changes the age condition only; ``"semantic"`` moves the semantic vector along
the healthy age trend (a quadratic in age with a sex offset, fitted on the training vectors) and keeps the age
condition; ``"both"`` (default) does both. The difference maps are against the reconstruction at the scan's own age,
so autoencoder blur cancels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.diffusion.parameterisation import CovariateTrend, GaussianPriorResidual
from normcore.diffusion.samplers import ddim_decode, ddim_invert
from normcore.imaging.anomaly import centile_among
from normcore.imaging.config import ImagingConfig
from normcore.imaging.latent_space import LatentSpaceModel, parse_sex
from normcore.imaging.training import train_denoiser
from normcore.imaging.volumetry import tissue_volume_ml, ventricle_volume_ml
from normcore.nets.latent_transformer import LatentTransformer
from normcore.nets.semantic_encoder import SemanticEncoder3d
from normcore.persistence import load_model_dir, save_model_dir

FORMAT = "normcore-mri-diffae/1"
FORMAT_VERSION = 1
LATENT_MODEL_DIR = "latent-norms"  # the semantic latent's tabular normative model, a model folder inside this one
COUNTERFACTUAL_MODES = ("both", "condition", "semantic")
SEMANTIC_PREFIX = "semantic_"
COVARIATE_DROPOUT = 0.5  # share of training rows whose age and sex are withheld (see SemanticDenoiser)
MAX_AGE_GUIDANCE = 20.0
MAX_AGE_SUPERVISION = 100.0
"""Largest weight of the semantic vector's age read-out loss (:class:`SemanticDenoiser`)."""
LATENT_PRIORS = ("age-trend", "constant")
"""The Gaussian prior under the latent denoiser's residual: ``age-trend`` (default) has a per-element mean that
moves with age and sex (:class:`~normcore.diffusion.parameterisation.CovariateTrend`); ``constant`` (every model
saved before the option existed) has one mean for all ages."""


def check_guidance(value) -> float:
    """An age-guidance scale: a number in [1, MAX_AGE_GUIDANCE] (1: decode with the new conditions as they are)."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise InputError(f"age guidance {value!r}: a number from 1 to {MAX_AGE_GUIDANCE:g}") from None
    if not 1.0 <= scale <= MAX_AGE_GUIDANCE:
        raise InputError(f"age guidance {value!r}: a number from 1 to {MAX_AGE_GUIDANCE:g}")
    return scale


class SemanticDenoiser(nn.Module):
    """The jointly trained pair: the semantic encoder and the conditional latent denoiser.

    The denoiser's condition is the covariates (age, sex), then, with ``covariate_dropout`` > 0, a flag saying
    whether they are given, then the semantic vector. In training the covariates are withheld (zeroed, flag 0)
    from a ``covariate_dropout`` share of the batch, so the semantic vector must itself carry what age and sex
    do to the brain (otherwise the encoder has no reason to: the denoiser gets them for free); at inference they
    are always given. ``condition(cov, z0)`` builds the condition from the clean latent; ``forward`` is the
    denoiser (predicted noise and variance interpolation).

    ``age_supervision`` > 0 adds a linear read-out of the (standardised) age from the semantic vector, trained with
    weight ``age_supervision`` on its squared error beside the denoising loss (:meth:`training_condition`), so the
    vector has to carry age explicitly; 0 (the default, and every model saved before it existed) has no read-out.
    """

    def __init__(self, encoder: SemanticEncoder3d, denoiser: nn.Module, covariate_dropout: float = 0.0,
                 age_supervision: float = 0.0, semantic_dim: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.denoiser = denoiser
        self.covariate_dropout = float(covariate_dropout)
        self.age_supervision = float(age_supervision)
        if self.age_supervision > 0:
            if semantic_dim is None:
                raise ValueError("age_supervision needs the semantic vector's length (semantic_dim)")
            self.age_head = nn.Linear(int(semantic_dim), 1)

    @staticmethod
    def cond_dim(n_covariates: int, semantic_dim: int, covariate_dropout: float) -> int:
        return n_covariates + (1 if covariate_dropout > 0 else 0) + semantic_dim

    def join(self, cov: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """The denoiser's condition from covariates (N, k) and semantic vectors (N, semantic_dim)."""
        if self.covariate_dropout > 0:
            keep = torch.ones(len(cov), 1, device=cov.device)
            if self.training:
                keep = (torch.rand(len(cov), 1, device=cov.device) >= self.covariate_dropout).float()
            cov = torch.cat([cov * keep, keep], dim=1)
        return torch.cat([cov, semantic], dim=1)

    def condition(self, cov: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        return self.join(cov, self.encoder(z0))

    def training_condition(self, cov: torch.Tensor, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition (as :meth:`condition`) and the auxiliary loss added to the denoising loss: the weighted
        squared error of the age read out from the semantic vector (0 without age supervision). ``cov[:, 0]`` is
        the standardised age."""
        semantic = self.encoder(z0)
        aux = torch.zeros((), device=z0.device)
        if self.age_supervision > 0:
            aux = self.age_supervision * (self.age_head(semantic)[:, 0] - cov[:, 0]).pow(2).mean()
        return self.join(cov, semantic), aux

    def forward(self, zt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        return self.denoiser(zt, t, cond)


@dataclass
class LatentDeviation:
    """Whole-brain deviation of one scan's semantic vector from healthy people of its age and sex.

    ``centile`` (0..1): rank of ``multivariate_d2`` among the healthy validation scans (``n_reference`` of them;
    1 = more deviant than all). ``multivariate_z``: the Mahalanobis distance of the per-dimension z on the normal
    scale (chi-square with ``len(per_dimension_z)`` degrees of freedom); ``cosine_similarity``: the paper's score
    (1 = pointing the same way as the matched healthy mean; lower = more deviant).
    """

    centile: float
    multivariate_z: float
    multivariate_d2: float
    cosine_similarity: float
    per_dimension_z: list[float]
    n_reference: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Counterfactuals:
    """A scan's reconstruction and counterfactuals on the model grid (volumes in [0, 1])."""

    age: float
    sex: str
    mode: str
    guidance: float  # the age-guidance scale they were decoded with (1: none)
    semantic: np.ndarray
    reconstruction: np.ndarray
    ages: list[float]
    volumes: np.ndarray  # (len(ages), X, Y, Z)

    def differences(self) -> np.ndarray:
        """Counterfactual minus the reconstruction at the scan's own age, per requested age."""
        return self.volumes - self.reconstruction[None]


class NormativeDiffusionAutoencoder(LatentSpaceModel):
    """Diffusion autoencoder with a normative model of its semantic latent (see the module docstring).

    ``semantic_dim``: length of the semantic vector; ``covariate_dropout`` and ``age_supervision``: see
    :class:`SemanticDenoiser`;
    ``inversion_steps``: DDIM steps of inversion and decoding;
    ``matched_k``: healthy training scans of the same sex, nearest in age, whose mean vector the cosine score
    compares with. ``latent_model_params``: settings of the latent's ``NormativeDiffusion``. ``age_guidance``: the
    default scale of :meth:`counterfactual`'s age guidance (1: none; stored in the card). ``latent_prior``: one of
    :data:`LATENT_PRIORS`; with ``age-trend`` the healthy latent's age trend is part of the denoiser itself, so
    generation and counterfactuals follow it even where the network learnt little of age from ~100 scans.
    """

    def __init__(self, config: str | dict | ImagingConfig = "cpu", semantic_dim: int = 32, inversion_steps: int = 50,
                 matched_k: int = 10, seed: int = 0, device: str = "auto", latent_model_params: dict | None = None,
                 covariate_dropout: float = COVARIATE_DROPOUT, age_guidance: float = 1.0,
                 age_supervision: float = 0.0, latent_prior: str = "age-trend", **overrides):
        super().__init__(config, seed=seed, device=device, **overrides)
        if latent_prior not in LATENT_PRIORS:
            raise InputError(f"latent prior {latent_prior!r}: use one of {list(LATENT_PRIORS)}")
        self.latent_prior = latent_prior
        self.age_guidance = check_guidance(age_guidance)
        if int(semantic_dim) < 2 or int(inversion_steps) < 2 or int(matched_k) < 1:
            raise InputError("semantic_dim and inversion_steps must be at least 2 and matched_k at least 1")
        if not 0 <= float(covariate_dropout) < 1:
            raise InputError(f"covariate_dropout {covariate_dropout!r}: a share in [0, 1)")
        self.covariate_dropout = float(covariate_dropout)
        if not 0 <= float(age_supervision) <= MAX_AGE_SUPERVISION:
            raise InputError(f"age supervision {age_supervision!r}: a weight from 0 to {MAX_AGE_SUPERVISION:g}")
        self.age_supervision = float(age_supervision)
        self.semantic_dim, self.inversion_steps, self.matched_k = int(semantic_dim), int(inversion_steps), \
            int(matched_k)
        self.latent_model_params = dict(latent_model_params or {})

    @property
    def semantic_columns(self) -> list[str]:
        width = len(str(self.semantic_dim))
        return [f"{SEMANTIC_PREFIX}{i + 1:0{width}d}" for i in range(self.semantic_dim)]

    def _build(self) -> None:
        cfg = self.config
        self._build_first_stage()
        d_cond = SemanticDenoiser.cond_dim(2, self.semantic_dim, self.covariate_dropout)
        net = LatentTransformer(self.latent_shape_, d_cond, cfg.patch, cfg.dim, cfg.depth, cfg.heads)
        trend = None
        if self.latent_prior == "age-trend":  # condition columns: age, sex, [given flag], semantic vector
            trend = CovariateTrend(age=0, sex=1, given=2 if self.covariate_dropout > 0 else None)
        denoiser = GaussianPriorResidual(net, self.schedule, self.latent_shape_, trend)
        encoder = SemanticEncoder3d(cfg.latent_channels, self.semantic_dim)
        self.net_ = SemanticDenoiser(encoder, denoiser, self.covariate_dropout, self.age_supervision,
                                     self.semantic_dim).to(self.device)

    def conditions(self, ages, sexes, semantic: torch.Tensor) -> torch.Tensor:
        """The denoiser's condition at inference: age, sex (given) and the semantic vectors."""
        return self.net_.join(self._cond(ages, sexes), semantic)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net_(x, t, cond)[0]

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, volumes: np.ndarray, brains: np.ndarray, ages, sexes, val_volumes: np.ndarray,
            val_brains: np.ndarray, val_ages, val_sexes, progress: Progress | None = None,
            autoencoder_from: LatentSpaceModel | None = None) -> NormativeDiffusionAutoencoder:
        """Train the autoencoder (or reuse one), the semantic encoder with the denoiser, and the latent's normative
        model on healthy training scans; the healthy validation scans are the reference of the centile."""
        from normcore.tabular.diffusion_model import NormativeDiffusion

        progress = as_progress(progress)
        self._check_sizes(len(volumes), len(val_volumes), min_train=20)  # the latent model's 20 training rows
        cfg, start = self.config, time.perf_counter()
        self._build()
        mean, logvar = self._fit_first_stage(volumes, ages, progress, autoencoder_from)
        ae_s = time.perf_counter() - start
        self.net_.eval()  # conditions with the covariates given (no dropout) for the prior's trend
        self.net_.denoiser.fit_prior(mean, self.conditions(ages, sexes, mean.new_zeros(len(mean), self.semantic_dim)))
        self.net_, self.history_["dit_loss"] = train_denoiser(
            self.net_, self.schedule, mean, logvar, self._cond(ages, sexes), cfg.dit_steps, cfg.dit_batch,
            cfg.dit_lr, cfg.ema_decay, cfg.vlb_weight, cfg.clip_x0, self.seed, progress)
        dit_s = time.perf_counter() - start - ae_s
        ages, val_ages = np.asarray(ages, float), np.asarray(val_ages, float)
        sex_codes = np.array([parse_sex(s) for s in sexes])
        self.train_semantic_ = self.semantic(volumes)
        self.train_ages_, self.train_sexes_ = ages, sex_codes
        self._fit_age_trend()
        progress.update("semantic latent norms", 0, 1)
        params = {"seed": self.seed, "device": str(self.device), **self.latent_model_params}
        self.latent_model_ = NormativeDiffusion(**params).fit(self._frame(self.train_semantic_, ages, sexes),
                                                             age="age", covariates=["sex"], progress=progress)
        val_latents = self.encode(val_volumes)[0]
        val_semantic = self.semantic_of_latents(val_latents)
        self.reference_d2_ = self._latent_scores(val_semantic, val_ages, val_sexes)["multivariate_d2"].to_numpy(float)
        self.reference_cosine_ = self.cosine_similarity(val_semantic, val_ages, val_sexes)
        all_vols = np.concatenate([np.asarray(volumes), np.asarray(val_volumes)])
        all_brains = np.concatenate([np.asarray(brains, bool), np.asarray(val_brains, bool)])
        self.healthy_ = {"age": np.r_[ages, val_ages],
                         "sex": np.r_[sex_codes, [parse_sex(s) for s in val_sexes]].astype(float),
                         "ventricle_ml": ventricle_volume_ml(all_vols, self.grid, all_brains),
                         "tissue_ml": tissue_volume_ml(all_vols, all_brains, self.grid)}
        self.fit_brain_age(volumes, ages, val_volumes, val_ages, latents=mean, val_latents=val_latents)
        self.training_ = {"n_train": int(len(volumes)), "n_validation": int(len(val_volumes)),
                          "autoencoder_s": round(ae_s, 1), "diffusion_s": round(dit_s, 1),
                          "total_s": round(time.perf_counter() - start, 1), "device": str(self.device)}
        return self

    def _frame(self, semantic: np.ndarray, ages, sexes) -> pd.DataFrame:
        frame = pd.DataFrame(np.asarray(semantic, float), columns=self.semantic_columns)
        frame["age"] = np.asarray(ages, float)
        frame["sex"] = ["M" if parse_sex(s) else "F" for s in np.atleast_1d(sexes)]
        return frame

    def _trend_design(self, ages, sexes) -> np.ndarray:
        a = (np.atleast_1d(np.asarray(ages, float)) - self.age_mean_) / self.age_std_
        s = np.array([2.0 * parse_sex(x) - 1.0 for x in np.atleast_1d(sexes)])
        return np.stack([np.ones_like(a), a, a ** 2, s], 1)

    def _fit_age_trend(self) -> None:
        """Least-squares healthy trend of the semantic vector: intercept, age, age squared and sex (standardised)."""
        x = self._trend_design(self.train_ages_, self.train_sexes_)
        self.age_trend_ = np.linalg.lstsq(x, self.train_semantic_, rcond=None)[0]

    def semantic_trend(self, ages, sexes) -> np.ndarray:
        """The healthy mean semantic vector at each age and sex, (N, semantic_dim)."""
        return self._trend_design(ages, sexes) @ self.age_trend_

    # ------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def semantic(self, volumes: np.ndarray) -> np.ndarray:
        """Semantic vectors (N, semantic_dim) of volumes on the model grid."""
        return self.semantic_of_latents(self.encode(volumes)[0])

    @torch.no_grad()
    def semantic_of_latents(self, latents: torch.Tensor) -> np.ndarray:
        """:meth:`semantic` of scans already encoded (their :meth:`encode` means)."""
        return self.net_.encoder(latents).cpu().numpy().astype(float)

    def _latent_scores(self, semantic: np.ndarray, ages, sexes) -> pd.DataFrame:
        """The latent model's scores of the vectors (z and centile per dimension, multivariate scores)."""
        return self.latent_model_.score(self._frame(semantic, ages, sexes), seed=self.seed)

    def matched(self, age: float, sex) -> np.ndarray:
        """Rows of the ``matched_k`` healthy training scans of the same sex nearest in age (all sexes if none)."""
        same = np.flatnonzero(self.train_sexes_ == parse_sex(sex))
        pool = same if same.size else np.arange(len(self.train_ages_))
        return pool[np.argsort(np.abs(self.train_ages_[pool] - float(age)), kind="stable")[:self.matched_k]]

    def cosine_similarity(self, semantic: np.ndarray, ages, sexes) -> np.ndarray:
        """Cosine of each vector with the mean vector of the ``matched_k`` same-sex healthy training scans nearest
        in age (Ijishakin et al.'s score)."""
        out = []
        for s, age, sex in zip(np.atleast_2d(semantic), np.atleast_1d(ages), np.atleast_1d(sexes), strict=True):
            ref = self.train_semantic_[self.matched(age, sex)].mean(0)
            out.append(float(s @ ref / max(np.linalg.norm(s) * np.linalg.norm(ref), 1e-12)))
        return np.array(out)

    def latent_deviation(self, semantic: np.ndarray, ages, sexes) -> list[LatentDeviation]:
        """Whole-brain deviation of each semantic vector (see :class:`LatentDeviation`)."""
        scores = self._latent_scores(semantic, ages, sexes)
        d2, cosine = scores["multivariate_d2"].to_numpy(float), self.cosine_similarity(semantic, ages, sexes)
        zcols = [f"z:{c}" for c in self.semantic_columns]
        n_ref = int(np.isfinite(self.reference_d2_).sum())
        return [LatentDeviation(centile_among(d2[i], self.reference_d2_) / 100.0,
                                float(scores["multivariate_z"].iloc[i]), float(d2[i]), float(cosine[i]),
                                [float(v) for v in scores[zcols].iloc[i]], n_ref) for i in range(len(d2))]

    @torch.no_grad()
    def invert(self, volumes: np.ndarray, ages, sexes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean latents, semantic vectors and stochastic codes (DDIM inversion given age, sex and the vector)."""
        z0, _ = self.encode(volumes)
        semantic = self.net_.encoder(z0)
        cond = self.conditions(ages, sexes, semantic)
        return z0, semantic, ddim_invert(self._eps, self.schedule, z0, cond, self.inversion_steps)

    @torch.no_grad()
    def decode_code(self, code: torch.Tensor, ages, sexes, semantic: torch.Tensor,
                    guided_from: torch.Tensor | None = None, guidance: float = 1.0) -> np.ndarray:
        """Volumes decoded from stochastic codes with the given conditions (deterministic).

        With ``guided_from`` (conditions, one row per code) and ``guidance`` w, each step's noise prediction is
        eps(from) + w * (eps(given) - eps(from)): w = 1 is plain decoding with the given conditions, w > 1 moves
        further in the direction the change of condition points (classifier-free guidance between two conditions),
        and a row whose conditions equal its ``guided_from`` decodes exactly as without guidance.
        """
        cond = self.conditions(ages, sexes, semantic.to(self.device, torch.float32))
        eps_fn = self._eps
        if guided_from is not None and guidance != 1.0:
            def eps_fn(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                both = self._eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([guided_from, c]))
                base, moved = both.chunk(2)
                return base + guidance * (moved - base)
        return self.decode(ddim_decode(eps_fn, self.schedule, code, cond, self.inversion_steps))

    def reconstruct(self, volumes: np.ndarray, ages, sexes) -> np.ndarray:
        """Inversion then decoding with the scan's own conditions."""
        _, semantic, code = self.invert(volumes, ages, sexes)
        return self.decode_code(code, ages, sexes, semantic)

    def counterfactual(self, volume: np.ndarray, age: float, sex, at_ages, mode: str = "both",
                       age_guidance: float | None = None, progress: Progress | None = None) -> Counterfactuals:
        """The scan at other ages: its code and semantic vector kept, the age changed as ``mode`` says.

        ``age_guidance`` (default: the model's ``age_guidance``) scales the change of condition at every decoding
        step (:meth:`decode_code`): 1 decodes with the new conditions as they are; larger values amplify what the
        denoiser associates with the change of age. The subject's own age is reproduced exactly at any scale.
        """
        progress = as_progress(progress)
        guidance = self.age_guidance if age_guidance is None else check_guidance(age_guidance)
        if mode not in COUNTERFACTUAL_MODES:
            raise InputError(f"counterfactual mode {mode!r}: use one of {list(COUNTERFACTUAL_MODES)}")
        targets = [float(a) for a in np.atleast_1d(at_ages)]
        if not targets:
            raise InputError("no counterfactual age given")
        progress.update("inversion", 0, 2)
        _, semantic, code = self.invert(volume, [age], [sex])
        progress.update("counterfactuals", 1, 2)
        n = len(targets) + 1
        ages = np.r_[float(age), targets]
        moved = semantic.repeat(n, 1)
        if mode in ("semantic", "both"):
            shift = self.semantic_trend(ages, [sex] * n) - self.semantic_trend([age] * n, [sex] * n)
            moved = moved + torch.tensor(shift, dtype=torch.float32, device=self.device)
        cond_ages = ages if mode in ("condition", "both") else np.full(n, float(age))
        own = self.conditions([age] * n, [sex] * n, semantic.repeat(n, 1))
        volumes = self.decode_code(code.repeat(n, 1, 1, 1, 1), cond_ages, [sex] * n, moved, own, guidance)
        progress.update("counterfactuals", 2, 2)
        return Counterfactuals(float(age), "M" if parse_sex(sex) else "F", mode, guidance,
                               semantic[0].cpu().numpy().astype(float), volumes[0], targets, volumes[1:])

    def principal_axis(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unit first principal axis of the healthy training vectors (the axis's sign makes it grow
        with age), for a one-number view of where a scan sits among healthy people."""
        mean = self.train_semantic_.mean(0)
        _, _, vt = np.linalg.svd(self.train_semantic_ - mean, full_matrices=False)
        axis = vt[0]
        if np.corrcoef((self.train_semantic_ - mean) @ axis, self.train_ages_)[0, 1] < 0:
            axis = -axis
        return mean, axis

    def healthy_position(self, semantic: np.ndarray, age: float, sex) -> dict:
        """Coordinates on the principal axis of the healthy training scans, their healthy trend, and ``semantic``'s,
        with the ``matched_k`` same-sex training scans nearest in age (the cosine score's comparison group)."""
        mean, axis = self.principal_axis()
        grid = np.linspace(*self.age_range_, 50)
        return {"healthy_age": self.train_ages_, "healthy_sex": np.where(self.train_sexes_ == 1, "M", "F"),
                "healthy_coord": (self.train_semantic_ - mean) @ axis, "matched": self.matched(age, sex),
                "trend_age": grid, "trend_coord": (self.semantic_trend(grid, [sex] * len(grid)) - mean) @ axis,
                "age": float(age), "coord": float((np.ravel(semantic) - mean) @ axis)}

    def counterfactual_age_grid(self, step: float = 5.0) -> list[float]:
        """Ages every ``step`` years within the training range (the ages the dashboard's slider offers)."""
        lo, hi = self.age_range_
        return [float(a) for a in np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)]

    def evidence_text(self) -> str | None:
        """What the model card's held-out benchmark (``benchmarks/mri_diffae.py --update-card``) measured of the
        whole-brain deviation score, in words for a user beside the score; None when the card has no such metrics."""
        metrics = (getattr(self, "card_", None) or {}).get("metrics") or {}
        auc, healthy = metrics.get("lesion_auc") or {}, metrics.get("healthy_heldout") or {}
        parts = []
        if auc.get("multivariate_d2") is not None:
            text = (f"it told held-out scans with an implanted MS lesion from healthy ones with an AUC of "
                    f"{auc['multivariate_d2']:.2f} (0.5 is chance)")
            if auc.get("voxel_index_top1") is not None:
                text += f", where the voxel abnormality index reached {auc['voxel_index_top1']:.2f}"
            parts.append(text)
        if healthy.get("share_above_0.95") is not None:
            parts.append(f"{100 * healthy['share_above_0.95']:.0f}% of held-out healthy scans ranked above the 95th "
                         "centile (5% expected)")
        if not parts:
            return None
        return "Measured on this model's held-out scans (model card): " + "; ".join(parts) + "."

    def healthy_volumes(self) -> pd.DataFrame:
        """Ventricle and tissue volumes (ml) of the healthy training and validation scans, with age and sex."""
        return pd.DataFrame({k: np.asarray(v, float) for k, v in self.healthy_.items()})

    # ----------------------------------------------------------------------------------- persistence
    def save(self, path, card_extra: dict | None = None) -> Path:
        """Weights (safetensors), a JSON card, and the latent's normative model as a model folder inside."""
        tensors = {f"ae.{k}": v for k, v in self.ae_.state_dict().items()}
        tensors |= {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        tensors |= {"latent_mu": self.latent_mu_, "latent_sd": self.latent_sd_}
        arrays = {"train_semantic": self.train_semantic_, "train_ages": self.train_ages_,
                  "train_sexes": self.train_sexes_, "age_trend": self.age_trend_, "reference_d2": self.reference_d2_,
                  "reference_cosine": self.reference_cosine_,
                  **{f"healthy.{k}": v for k, v in self.healthy_.items()}}
        tensors |= {k: torch.from_numpy(np.array(v, np.float64)) for k, v in arrays.items()}
        tensors |= self._brain_age_tensors()
        card = {"format": FORMAT, "format_version": FORMAT_VERSION, "config_name": self.config_name,
                "config": self.config.to_dict(), "seed": self.seed, "semantic_dim": self.semantic_dim,
                "inversion_steps": self.inversion_steps, "matched_k": self.matched_k,
                "covariate_dropout": self.covariate_dropout, "age_guidance": self.age_guidance,
                "age_supervision": self.age_supervision, "latent_prior": self.latent_prior,
                "latent_model_params": self.latent_model_params, "latent_model": LATENT_MODEL_DIR,
                "age_mean": self.age_mean_, "age_std": self.age_std_, "age_range": list(self.age_range_),
                "sex_coding": {"0": "F", "1": "M"}, "training": getattr(self, "training_", {}),
                "history": getattr(self, "history_", {}),
                "brain_age": self._brain_age_card(),
                **(card_extra or {})}
        return save_model_dir(path, tensors, card, nested={LATENT_MODEL_DIR: self.latent_model_.save})

    @classmethod
    def load(cls, path, device: str = "auto") -> NormativeDiffusionAutoencoder:
        """Load a saved model folder (no code is executed from it)."""
        from normcore.tabular.diffusion_model import NormativeDiffusion

        tensors, card = load_model_dir(path, FORMAT, FORMAT_VERSION)
        try:
            model = cls(ImagingConfig.from_dict(card["config"], label=f"{path}: config"), card["semantic_dim"],
                        card["inversion_steps"], card["matched_k"], seed=card["seed"], device=device,
                        latent_model_params=card.get("latent_model_params"),
                        covariate_dropout=card.get("covariate_dropout", 0.0),
                        age_guidance=card.get("age_guidance", 1.0),
                        age_supervision=card.get("age_supervision", 0.0),
                        latent_prior=card.get("latent_prior", "constant"))
            model.age_mean_, model.age_std_ = card["age_mean"], card["age_std"]
            model.age_range_ = tuple(card["age_range"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"{path}: the model card is incomplete ({type(exc).__name__}: {exc})") from None
        model.config_name = card.get("config_name", "custom")
        model._build()
        try:
            model.ae_.load_state_dict({k[3:]: v for k, v in tensors.items() if k.startswith("ae.")})
            model.net_.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            arr = {k: tensors[k].numpy() for k in ("train_semantic", "train_ages", "train_sexes", "age_trend",
                                                   "reference_d2", "reference_cosine")}
        except (RuntimeError, KeyError) as exc:
            raise InputError(f"{path}: weights do not match the model card ({str(exc).splitlines()[0]})") from None
        model.ae_.eval()
        model.net_.eval()
        model.latent_mu_ = tensors["latent_mu"].to(model.device)
        model.latent_sd_ = tensors["latent_sd"].to(model.device)
        model.train_semantic_, model.train_ages_ = arr["train_semantic"], arr["train_ages"]
        model.train_sexes_ = arr["train_sexes"].astype(int)
        model.age_trend_, model.reference_d2_, model.reference_cosine_ = (arr["age_trend"], arr["reference_d2"],
                                                                          arr["reference_cosine"])
        model.healthy_ = {k[len("healthy."):]: v.numpy() for k, v in tensors.items() if k.startswith("healthy.")}
        model._load_brain_age(tensors)
        model.latent_model_ = NormativeDiffusion.load(Path(path) / LATENT_MODEL_DIR,
                                                      device=None if device == "auto" else device)
        model.training_, model.history_ = card.get("training", {}), card.get("history", {})
        model.acquisition_ = card.get("acquisition")
        model.card_ = card
        return model

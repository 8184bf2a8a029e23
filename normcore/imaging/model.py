"""Conditional latent diffusion model of healthy brains (CADD): fit, restore, score, save, load.

Stage 1 is a 3D KL autoencoder; stage 2 a transformer denoiser with adaptive layer norm over latent
patches, conditioned on timestep, age and sex, with learned variance. A healthy validation cohort
calibrates the KL mask (per-element 95th percentiles), the voxel z-maps (per-voxel error mean and
standard deviation) and the reference distribution of the abnormality index (leave-one-out); the last two
can instead rest on every healthy scan through cross-fitting (:mod:`.crossfit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.diffusion.parameterisation import GaussianPriorResidual
from normcore.imaging.anomaly import (
    INDEX_LABELS,
    TOPS,
    abnormality_index,
    anomaly_map,
    centile_among,
    healthy_error_stats,
    index_region,
    leave_one_out_index_table,
    reslice_shift_text,
    scored_errors,
    voxel_zmap,
)
from normcore.imaging.config import ImagingConfig
from normcore.imaging.grid import template_on_grid
from normcore.imaging.latent_space import LatentSpaceModel
from normcore.imaging.restoration import healthy_kl_quantile, kl_guided_inpaint, plain_restore
from normcore.imaging.training import train_denoiser
from normcore.nets.latent_transformer import LatentTransformer
from normcore.persistence import load_model_dir, save_model_dir

FORMAT = "normcore-mri-ldm/1"
FORMAT_VERSION = 3


def _migrate_v1(card: dict, tensors: dict) -> None:
    """Version 1 cards: configurations written before the Gaussian-prior residual have no ``prior_residual``."""
    card["config"].setdefault("prior_residual", False)


def _migrate_v2(card: dict, tensors: dict) -> None:
    """Version 2 cards: models saved before the peak index. Nothing to change: their config has no
    ``headline_index`` (so they lead with the top 1%, as before) and their weights no healthy reference for the
    peak, whose centile :meth:`ImagingNormativeModel.load` leaves unknown (NaN; rebuild the reference from kept
    out-of-fold maps to get one)."""


def _reference(tensors: dict, method: str, top: str) -> np.ndarray:
    """The healthy reference of one index; NaN for each reference scan where the model predates the index."""
    key = f"reference.{method}.{top}"
    if key in tensors:
        return tensors[key].numpy()
    return np.full(len(tensors[f"reference.{method}.top1"]), np.nan)


MIGRATIONS = {1: _migrate_v1, 2: _migrate_v2}
METHODS = ("kl-inpaint", "plain", "autoencoder")


@dataclass
class ImagingScore:
    """Result of scoring one scan on the model grid."""

    method: str
    restoration: np.ndarray
    anomaly: np.ndarray
    zmap: np.ndarray
    index: dict[str, float]
    centile: dict[str, float]
    latent_mask_share: float | None = None
    warnings: list[str] = field(default_factory=list)
    n_reference: int | None = None  # healthy scans the centile ranks among (its resolution is 100 / n_reference)
    reference_scheme: str = "validation"  # how they were restored: "validation" or "cross-fitted" (crossfit.py)
    index_inset_mm: float = 0.0  # the index ranks voxels at least this far inside the brain's edge (config)
    headline: str = "top1"  # which of ``index`` is the scan's headline number (config ``headline_index``)
    reproducibility: float | None = None  # mean |centile shift| of the headline index when healthy held-out scans
    # are resliced by a quarter voxel (card ``reproducibility``, benchmarks/mri_plausibility.py); None: not measured
    smoothing_shift: float | None = None  # the same when the reslice is trilinear, which also smooths the scan

    @property
    def headline_label(self) -> str:
        """The headline index named for a user, e.g. "peak: top 0.05%"."""
        return INDEX_LABELS[self.headline]

    def reference_text(self) -> str:
        """The healthy reference of the centile in words, with its size and resolution."""
        if not self.n_reference:
            return "the model's healthy reference scans"
        what = (f"{self.n_reference} healthy scans, each restored by a denoiser that never trained on it "
                "(cross-fitted)" if self.reference_scheme == "cross-fitted" else
                f"{self.n_reference} healthy validation scans")
        text = f"{what}, in steps of {100 / self.n_reference:.1f} centile points"
        shift = reslice_shift_text(self.reproducibility, self.smoothing_shift)
        return f"{text}; {shift}" if shift else text


class ImagingNormativeModel(LatentSpaceModel):
    """Pseudo-healthy restoration model of T1 scans on an MNI grid, conditioned on age and sex."""

    # ----------------------------------------------------------------------------------------- build
    def _build(self) -> None:
        cfg = self.config
        self._build_first_stage()
        net = LatentTransformer(self.latent_shape_, 2, cfg.patch, cfg.dim, cfg.depth, cfg.heads)
        if cfg.prior_residual:
            net = GaussianPriorResidual(net, self.schedule, self.latent_shape_)
        self.denoiser_ = net.to(self.device)

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, volumes: np.ndarray, brains: np.ndarray, ages, sexes, val_volumes: np.ndarray,
            val_brains: np.ndarray, val_ages, val_sexes, progress: Progress | None = None,
            autoencoder_from: ImagingNormativeModel | None = None) -> ImagingNormativeModel:
        """Train both stages on healthy training scans and calibrate on a healthy validation cohort.

        Volumes are preprocessed scans on the model grid (N, X, Y, Z) in [0, 1]; brains are bool masks.
        ``autoencoder_from``: a fitted model of the same grid and autoencoder shape whose first stage is
        reused as it is (only the latent diffusion model is trained; its latent scaling is recomputed).
        """
        progress = as_progress(progress)
        self._check_sizes(len(volumes), len(val_volumes))
        start = time.perf_counter()
        ae_s, dit_s = self.fit_stages(volumes, ages, sexes, progress, autoencoder_from)
        self.calibrate(val_volumes, val_brains, val_ages, val_sexes, progress)
        self.fit_brain_age(volumes, ages, val_volumes, val_ages)
        self.training_ = {"n_train": int(len(volumes)), "n_validation": int(len(val_volumes)),
                          "autoencoder_s": round(ae_s, 1), "diffusion_s": round(dit_s, 1),
                          "total_s": round(time.perf_counter() - start, 1), "device": str(self.device)}
        return self

    def fit_stages(self, volumes: np.ndarray, ages, sexes, progress: Progress | None = None,
                   autoencoder_from: ImagingNormativeModel | None = None) -> tuple[float, float]:
        """Train the first stage (or reuse ``autoencoder_from``'s) and the latent denoiser, without calibrating;
        returns the seconds of each stage."""
        progress = as_progress(progress)
        cfg, start = self.config, time.perf_counter()
        self._build()
        mean, logvar = self._fit_first_stage(volumes, ages, progress, autoencoder_from)
        ae_s = time.perf_counter() - start
        if isinstance(self.denoiser_, GaussianPriorResidual):
            self.denoiser_.fit_prior(mean)
        self.denoiser_, self.history_["dit_loss"] = train_denoiser(
            self.denoiser_, self.schedule, mean, logvar, self._cond(ages, sexes), cfg.dit_steps, cfg.dit_batch,
            cfg.dit_lr, cfg.ema_decay, cfg.vlb_weight, cfg.clip_x0, self.seed, progress)
        return ae_s, time.perf_counter() - start - ae_s

    @torch.no_grad()
    def calibrate(self, volumes: np.ndarray, brains: np.ndarray, ages, sexes, progress: Progress | None = None) -> None:
        """KL-mask thresholds, voxel error statistics and leave-one-out reference indices from one healthy cohort."""
        progress = as_progress(progress)
        progress.update("calibration", 0, 2)
        self.calibrate_kl(volumes, ages, sexes)
        restored = self.restore(volumes, ages, sexes, METHODS, progress=progress)
        self.set_reference({m: self.healthy_errors(volumes, restored[m], brains) for m in METHODS},
                           {"scheme": "validation", "n": int(len(volumes))})
        progress.update("calibration", 2, 2)

    @torch.no_grad()
    def calibrate_kl(self, volumes: np.ndarray, ages, sexes) -> None:
        """Per-level, per-element 95th percentiles of the step KL over healthy scans the denoiser did not train on
        (the healthy side of the KL-guided inpainting mask)."""
        z0, _ = self.encode(volumes)
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.kl_p95_ = healthy_kl_quantile(self.schedule, self.denoiser_, z0, self._cond(ages, sexes),
                                           self.config.levels, self.config.clip_x0, 0.95, gen).to(self.device)

    def healthy_errors(self, volumes: np.ndarray, restorations: np.ndarray, brains: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Scored error maps and scored voxels (both (N, X, Y, Z)) of scans and their restorations
        (:func:`~normcore.imaging.anomaly.scored_errors` with this model's configuration)."""
        cfg = self.config
        pairs = [scored_errors(v, r, b, cfg.error_scale, cfg.edge_erosion, cfg.error_power)
                 for v, r, b in zip(volumes, restorations, np.asarray(brains, bool), strict=True)]
        return np.stack([e for e, _ in pairs]), np.stack([m for _, m in pairs])

    def set_reference(self, errors: dict[str, tuple[np.ndarray, np.ndarray]], info: dict) -> None:
        """Voxel error statistics and the index's healthy reference from healthy error maps, per method.

        ``errors[method]`` = (scored error maps, scored voxels) of healthy scans restored by a denoiser that did
        not train on them; each scan's reference index uses the other scans' statistics (leave-one-out), so no scan
        is its own reference. ``info`` describes the reference (``scheme``, ``n``, ...) for the model card.
        """
        self.error_stats_, self.reference_ = {}, {}
        for method in METHODS:
            maps, scored = errors[method]
            self.error_stats_[method] = healthy_error_stats(maps, scored)
            self.reference_[method] = leave_one_out_index_table(maps, scored, TOPS, self.config.index_margin,
                                                                self._index_within())
        self.reference_info_ = dict(info)

    # ------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def restore(self, volumes: np.ndarray, ages, sexes, methods=("kl-inpaint",), seed: int | None = None,
                progress: Progress | None = None) -> dict[str, np.ndarray]:
        """Pseudo-healthy restorations (N, X, Y, Z) per method; ``"kl-inpaint_mask"`` holds the latent mask share."""
        progress = as_progress(progress)
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise InputError(f"unknown restoration method(s) {sorted(unknown)}; use {list(METHODS)}")
        vols = np.asarray(volumes, np.float32)
        vols = vols[None] if vols.ndim == 3 else vols
        ages, sexes = np.atleast_1d(ages), np.atleast_1d(sexes)
        out: dict[str, list] = {m: [] for m in methods}
        out["kl-inpaint_mask"] = []
        chunk, cfg = self.config.chunk, self.config
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 2 if seed is None else seed)
        for i in range(0, len(vols), chunk):
            progress.update("restoration", i, len(vols))
            z0, _ = self.encode(vols[i:i + chunk])
            cond = self._cond(ages[i:i + chunk], sexes[i:i + chunk])
            if "kl-inpaint" in methods:
                z, mask = kl_guided_inpaint(self.schedule, self.denoiser_, z0, cond, cfg.levels, self.kl_p95_,
                                            cfg.ddim_steps, cfg.clip_x0, gen)
                out["kl-inpaint"].append(self.decode(z))
                out["kl-inpaint_mask"].append(mask.mean(dim=(1, 2, 3, 4)).cpu().numpy())
            if "plain" in methods:
                z = plain_restore(self.schedule, self.denoiser_, z0, cond, cfg.plain_level, cfg.ddim_steps, cfg.clip_x0,
                                  gen)
                out["plain"].append(self.decode(z))
            if "autoencoder" in methods:
                out["autoencoder"].append(self.decode(z0))
        progress.update("restoration", len(vols), len(vols))
        return {k: np.concatenate(v) for k, v in out.items() if v}

    def score(self, volume: np.ndarray, brain: np.ndarray, age: float, sex, method: str = "kl-inpaint",
              seed: int | None = None, progress: Progress | None = None) -> ImagingScore:
        """Restoration, anomaly map, voxel z-map and abnormality index (with its healthy centile) of one scan."""
        return self.score_batch(np.asarray(volume)[None], np.asarray(brain)[None], [age], [sex], method, seed,
                                progress)[0]

    def score_batch(self, volumes: np.ndarray, brains: np.ndarray, ages, sexes, method: str = "kl-inpaint",
                    seed: int | None = None, progress: Progress | None = None) -> list[ImagingScore]:
        """:meth:`score` of several scans (N, X, Y, Z), restored together in batches of the configuration's
        ``chunk``."""
        lo, hi = self.age_range_
        volumes, brains = np.asarray(volumes, np.float32), np.asarray(brains, bool)
        restored = self.restore(volumes, ages, sexes, (method,), seed=seed, progress=progress)
        scaled, scored = self.healthy_errors(volumes, restored[method], brains)
        n_reference = int(np.isfinite(np.asarray(self.reference_[method]["top1"], float)).sum())
        inset = (self.config.edge_erosion + self.config.index_margin) * float(self.grid.spacing_mm)
        out = []
        for i, age in enumerate(np.atleast_1d(ages)):  # per scan: its maps and indices (vectorised over voxels)
            warnings = [] if lo <= float(age) <= hi else \
                [f"age {age:g} is outside the training range {lo:g}-{hi:g}: the index is extrapolated"]
            z = voxel_zmap(scaled[i], *self.error_stats_[method], scored[i])
            index = self.indices(z, scored[i])
            centile = {k: centile_among(v, self.reference_[method][k]) for k, v in index.items()}
            share = float(restored["kl-inpaint_mask"][i]) if method == "kl-inpaint" else None
            restoration = restored[method][i]
            out.append(ImagingScore(method, restoration, anomaly_map(volumes[i], restoration, brains[i]), z, index,
                                    centile, share, warnings, n_reference,
                                    self.reference_info_.get("scheme", "validation"), inset,
                                    self.config.headline_index, self.centile_reproducibility(method),
                                    self.centile_reproducibility(method, smoothing=True)))
        return out

    def centile_reproducibility(self, method: str = "kl-inpaint", smoothing: bool = False) -> float | None:
        """How far the headline index's centile moved, on average, when healthy held-out scans were resliced by a
        quarter voxel (cubic spline; with ``smoothing``, trilinear, which also smooths the scan): the card's
        ``reproducibility`` (written by ``benchmarks/mri_plausibility.py --update-card`` for this model, its method
        and headline index); None when it was not measured for them."""
        rep = (getattr(self, "card_", None) or {}).get("reproducibility") or {}
        if rep.get("index") != self.config.headline_index or rep.get("method", "kl-inpaint") != method:
            return None
        value = rep.get("smoothing_mean_abs_centile_shift" if smoothing else "mean_abs_centile_shift")
        return float(value) if isinstance(value, int | float) and np.isfinite(value) else None

    def _index_within(self) -> np.ndarray | None:
        """The template's brain on the grid when the index ranks only voxels inside it (config), else None."""
        return template_on_grid(self.grid)[1] if self.config.index_within_template else None

    def indices(self, zmap: np.ndarray, scored: np.ndarray) -> dict[str, float]:
        """The abnormality index of each ``TOPS`` share, over the scored voxels less the configured
        ``index_margin`` and, with ``index_within_template``, inside the template's brain
        (:func:`~normcore.imaging.anomaly.index_region`)."""
        ranked = index_region(scored, self.config.index_margin, self._index_within())
        return {k: abnormality_index(zmap, ranked, top) for k, top in TOPS.items()}

    # ----------------------------------------------------------------------------------- persistence
    def save(self, path, card_extra: dict | None = None):
        """Weights (safetensors) and a JSON card with config, calibration summary and training info."""
        tensors = {f"ae.{k}": v for k, v in self.ae_.state_dict().items()}
        tensors |= {f"dit.{k}": v for k, v in self.denoiser_.state_dict().items()}
        tensors |= {"kl_p95": self.kl_p95_, "latent_mu": self.latent_mu_, "latent_sd": self.latent_sd_}
        for method in METHODS:
            mean, std = self.error_stats_[method]
            tensors[f"err_mean.{method}"] = torch.from_numpy(mean)
            tensors[f"err_std.{method}"] = torch.from_numpy(std)
            for k in TOPS:
                ref = np.asarray(self.reference_[method][k], float)
                if np.isfinite(ref).any():  # a model loaded from before an index has no reference for it
                    tensors[f"reference.{method}.{k}"] = torch.from_numpy(ref)
        tensors |= self._brain_age_tensors()
        card = {"format": FORMAT, "format_version": FORMAT_VERSION, "config_name": self.config_name,
                "config": self.config.to_dict(), "seed": self.seed,
                "age_mean": self.age_mean_, "age_std": self.age_std_, "age_range": list(self.age_range_),
                "sex_coding": {"0": "F", "1": "M"}, "training": getattr(self, "training_", {}),
                "history": getattr(self, "history_", {}), "reference": getattr(self, "reference_info_", {}),
                "brain_age": self._brain_age_card(), **(card_extra or {})}
        return save_model_dir(path, tensors, card)

    @classmethod
    def load(cls, path, device: str = "auto") -> ImagingNormativeModel:
        """Load a saved model folder (no code is executed from it)."""
        tensors, card = load_model_dir(path, FORMAT, FORMAT_VERSION, MIGRATIONS)
        model = cls(ImagingConfig.from_dict(card["config"], label=f"{path}: config"), seed=card["seed"],
                    device=device)
        model.config_name = card.get("config_name", "custom")
        model._build()
        try:
            model.ae_.load_state_dict({k[3:]: v for k, v in tensors.items() if k.startswith("ae.")})
            model.denoiser_.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dit.")})
        except RuntimeError as exc:
            raise InputError(f"{path}: weights do not match the model card ({str(exc).splitlines()[0]})") from None
        model.ae_.eval()
        model.denoiser_.eval()
        dev = model.device
        model.kl_p95_ = tensors["kl_p95"].to(dev)
        model.latent_mu_, model.latent_sd_ = tensors["latent_mu"].to(dev), tensors["latent_sd"].to(dev)
        model.error_stats_ = {m: (tensors[f"err_mean.{m}"].numpy(), tensors[f"err_std.{m}"].numpy()) for m in METHODS}
        model.reference_ = {m: {k: _reference(tensors, m, k) for k in TOPS} for m in METHODS}
        model._load_brain_age(tensors)
        model.age_mean_, model.age_std_ = card["age_mean"], card["age_std"]
        model.age_range_ = tuple(card["age_range"])
        model.training_, model.history_ = card.get("training", {}), card.get("history", {})
        model.reference_info_ = card.get("reference") or {  # cards before cross-fitting: the validation cohort
            "scheme": "validation", "n": int(np.isfinite(model.reference_["kl-inpaint"]["top1"]).sum())}
        model.acquisition_ = card.get("acquisition")  # the training scans' envelope (None: cards before it)
        model.card_ = card
        return model

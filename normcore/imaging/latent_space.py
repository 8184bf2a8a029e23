"""What every latent model of T1 scans shares: the grid, the first-stage autoencoder, scaled latents, covariates.

:class:`LatentSpaceModel` holds the configuration, device and noise schedule, encodes volumes on the model grid to
latents scaled to unit variance per channel (and decodes them back), codes age and sex as network conditions, and
fits the first stage (trained, or reused from a fitted model of the same grid). The restoration model
(:mod:`.model`) and the diffusion autoencoder (:mod:`.diffae`) build their latent diffusion on it.

Both also read brain age from the first-stage latent (:mod:`.brain_age`): :meth:`LatentSpaceModel.fit_brain_age`
at the end of their ``fit``, :meth:`LatentSpaceModel.brain_age` per scan, saved with the model's weights.
"""

from __future__ import annotations

import numpy as np
import torch

from normcore._utils.device import resolve_device
from normcore._utils.errors import InputError
from normcore._utils.progress import Progress
from normcore.diffusion.schedule import NoiseSchedule
from normcore.imaging.brain_age import MIN_SCANS, BrainAge, BrainAgeReadout
from normcore.imaging.config import ImagingConfig
from normcore.imaging.grid import ModelGrid
from normcore.imaging.training import train_autoencoder
from normcore.nets.autoencoder3d import KLAutoencoder3d


def parse_sex(value) -> int:
    """1 = male, 0 = female; accepts M/F, male/female and the 0/1 coding (0 = female, 1 = male)."""
    text = str(value).strip().lower()
    if text in ("m", "male", "1", "1.0"):
        return 1
    if text in ("f", "female", "0", "0.0"):
        return 0
    raise InputError(f"sex {value!r} not understood: use M or F (or 1 = male, 0 = female)")


def _features(latents: torch.Tensor) -> np.ndarray:
    """Brain age's input: first-stage latent means flattened per scan, (N, C*x*y*z)."""
    return latents.flatten(1).cpu().numpy().astype(float)


class LatentSpaceModel:
    """Configuration, first-stage autoencoder and latent scaling of an imaging model (see the module docstring)."""

    def __init__(self, config: str | dict | ImagingConfig = "cpu", seed: int = 0, device: str = "auto", **overrides):
        if isinstance(config, ImagingConfig):
            base, self.config_name = config, "custom"
        elif isinstance(config, str):
            base, self.config_name = ImagingConfig.preset(config), config
        else:
            base, self.config_name = ImagingConfig.from_dict(dict(config)), "custom"
        self.config = base.replace(**overrides) if overrides else base
        self.seed = seed
        self.device = resolve_device(device)
        self.grid = ModelGrid.from_dict(self.config.grid)
        self.schedule = NoiseSchedule("cosine", self.config.timesteps)
        self.brain_age_: BrainAgeReadout | None = None  # set by fit_brain_age or on loading

    # ------------------------------------------------------------------------------------- brain age
    def fit_brain_age(self, volumes: np.ndarray, ages, val_volumes: np.ndarray, val_ages,
                      latents: torch.Tensor | None = None,
                      val_latents: torch.Tensor | None = None) -> BrainAgeReadout | None:
        """Fit the brain-age read-out (:class:`~normcore.imaging.brain_age.BrainAgeReadout`) on the healthy
        training scans' first-stage latents, its reference cross-fitted over them and the validation scans. It
        depends on the first stage only, so a saved model can gain it without retraining
        (``benchmarks/mri_brain_age.py``). ``latents`` / ``val_latents``: the scans' :meth:`encode` means when
        already computed. With fewer than :data:`~normcore.imaging.brain_age.MIN_SCANS` training scans the model
        has no read-out (None): a regression from so few brains would say nothing."""
        if len(volumes) < MIN_SCANS:
            self.brain_age_ = None
            return None
        train = self.encode(volumes)[0] if latents is None else latents
        val = self.encode(val_volumes)[0] if val_latents is None else val_latents
        self.brain_age_ = BrainAgeReadout(seed=self.seed).fit(_features(train), ages, _features(val), val_ages)
        return self.brain_age_

    def brain_age(self, volumes: np.ndarray, ages) -> list[BrainAge] | None:
        """Brain age, its bias-corrected gap and healthy centile per volume; None for a model without the
        read-out."""
        return None if self.brain_age_ is None else self.brain_age_of_latents(self.encode(volumes)[0], ages)

    def brain_age_of_latents(self, latents: torch.Tensor, ages) -> list[BrainAge] | None:
        """:meth:`brain_age` of scans already encoded (their :meth:`encode` means)."""
        return None if self.brain_age_ is None else self.brain_age_.score(_features(latents), ages)

    def _brain_age_tensors(self) -> dict[str, torch.Tensor]:
        if self.brain_age_ is None:
            return {}
        return {k: torch.from_numpy(v) for k, v in self.brain_age_.to_arrays().items()}

    def _brain_age_card(self) -> dict | None:
        readout = self.brain_age_
        if readout is None:
            return None
        return {"features": "first-stage latent means, flattened", "ridge_alpha": readout.alpha_,
                "folds": readout.folds, "n_reference": int(readout.reference_gaps_.size),
                "reference_mae_years": round(readout.reference_mae_, 2),
                "bias_slope": round(float(readout.bias_[0]), 4)}

    def _load_brain_age(self, tensors: dict[str, torch.Tensor]) -> None:
        self.brain_age_ = BrainAgeReadout.from_arrays({k: v.numpy() for k, v in tensors.items()
                                                       if k.startswith("brain_age.")})

    def _build_first_stage(self) -> None:
        cfg = self.config
        torch.manual_seed(self.seed)
        self.ae_ = KLAutoencoder3d(tuple(cfg.ae_channels), cfg.latent_channels).to(self.device)
        f = self.ae_.factor
        if any(s % f for s in self.grid.shape):
            raise ValueError(f"grid {self.grid.shape} is not divisible by the autoencoder factor {f}")
        self.latent_shape_ = (cfg.latent_channels, *(s // f for s in self.grid.shape))

    def _cond(self, ages, sexes) -> torch.Tensor:
        """(N, 2) network conditions: standardised age, and sex as -1 (female) / +1 (male)."""
        age = (np.asarray(ages, float) - self.age_mean_) / self.age_std_
        sex = np.array([2.0 * parse_sex(s) - 1.0 for s in np.atleast_1d(sexes)])
        return torch.tensor(np.stack([np.atleast_1d(age), sex], 1), dtype=torch.float32, device=self.device)

    def _volumes(self, volumes: np.ndarray) -> torch.Tensor:
        arr = np.asarray(volumes, np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[1:] != self.grid.shape:
            raise InputError(f"volumes of shape {arr.shape[1:]} do not match the model grid {self.grid.shape}")
        return torch.from_numpy(arr).unsqueeze(1).to(self.device)

    @torch.no_grad()
    def encode(self, volumes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled posterior mean and log-variance of the latents, (N, C, x, y, z)."""
        means, logvars = [], []
        x = self._volumes(volumes)
        for i in range(0, len(x), self.config.chunk):
            m, lv = self.ae_.encode(x[i:i + self.config.chunk])
            means.append((m - self.latent_mu_) / self.latent_sd_)
            logvars.append(lv - 2 * torch.log(self.latent_sd_))
        return torch.cat(means), torch.cat(logvars)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        out = [self.ae_.decode(z[i:i + self.config.chunk] * self.latent_sd_ + self.latent_mu_)
               for i in range(0, len(z), self.config.chunk)]
        return torch.cat(out)[:, 0].clamp(0, 1).cpu().numpy()

    @staticmethod
    def _check_sizes(n_train: int, n_val: int, min_train: int = 4, min_val: int = 4) -> None:
        if n_train < min_train or n_val < min_val:
            raise InputError(f"need at least {min_train} training and {min_val} validation scans (got {n_train} and "
                             f"{n_val})")

    def _fit_first_stage(self, volumes: np.ndarray, ages, progress: Progress,
                         autoencoder_from: LatentSpaceModel | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Age scaling, the autoencoder (trained, or copied from ``autoencoder_from``) and the latent scaling.

        Sets ``history_`` and returns the scaled training latents (mean, log-variance). A reused first stage must
        have this configuration's grid, autoencoder widths and latent channels.
        """
        cfg = self.config
        ages = np.asarray(ages, float)
        self.age_mean_, self.age_std_ = float(ages.mean()), float(max(ages.std(), 1.0))
        self.age_range_ = (float(ages.min()), float(ages.max()))
        if autoencoder_from is not None:
            same = ("grid", "ae_channels", "latent_channels")
            if any(getattr(autoencoder_from.config, k) != getattr(cfg, k) for k in same):
                raise InputError(f"the autoencoder to reuse has a different {'/'.join(same)} than this configuration")
            self.ae_.load_state_dict(autoencoder_from.ae_.state_dict())
            self.ae_.eval()
            self.history_ = {"ae_loss": [], "autoencoder_reused": True}
        else:
            self.history_ = {"ae_loss": train_autoencoder(self.ae_, self._volumes(volumes), cfg.ae_epochs,
                                                          cfg.ae_batch, cfg.ae_lr, cfg.kl_weight, self.seed,
                                                          progress)}
        self.latent_mu_ = torch.zeros(1, cfg.latent_channels, 1, 1, 1, device=self.device)
        self.latent_sd_ = torch.ones_like(self.latent_mu_)
        mean, logvar = self.encode(volumes)
        self.latent_mu_ = mean.mean(dim=(0, 2, 3, 4), keepdim=True)
        self.latent_sd_ = mean.std(dim=(0, 2, 3, 4), keepdim=True).clamp(min=1e-4)
        return (mean - self.latent_mu_) / self.latent_sd_, logvar - 2 * torch.log(self.latent_sd_)

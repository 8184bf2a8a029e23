"""Configuration of the imaging model: one dataclass, named presets, and no silently ignored keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from normcore._utils.errors import InputError
from normcore.imaging.anomaly import TOPS
from normcore.imaging.grid import CPU_GRID, GPU_GRID, ModelGrid


@dataclass(frozen=True)
class ImagingConfig:
    """Model grid, network sizes, training budgets and restoration settings of an imaging model.

    grid: the model grid as a dict (:class:`~normcore.imaging.grid.ModelGrid`); ae_channels: autoencoder
    widths per level (the latent is downsampled by 2 per level after the first); latent_channels;
    patch, dim, depth, heads: the latent transformer; ae_* and dit_*: epochs/steps, batch size and
    learning rate of the two training stages; kl_weight: autoencoder KL weight; ema_decay; vlb_weight:
    weight of the variational bound in the hybrid loss; timesteps: noise schedule length; levels: noise
    levels of KL-guided inpainting; ddim_steps: DDIM steps from a level to clean; plain_level: the level of
    the plain-restoration baseline; chunk: scans per batch at inference; prior_residual: the latent
    denoiser is a residual on a per-element Gaussian prior; clip_x0: bound on predicted clean latents;
    error_scale: ``"scan-median"`` divides each anomaly map by the scan's own median error inside the brain before
    the voxel statistics (a scan-wide misfit of intensity or registration is not a lesion), ``"none"`` keeps it;
    edge_erosion: voxels of the brain's edge left out of the z-map and the index (where registration and masking
    errors live); index_margin: further voxels of the scored region's edge left out of the abnormality index only
    (the z-map keeps them; :func:`~normcore.imaging.anomaly.index_region`); error_power: exponent of that (scaled)
    map before the voxel statistics, 2/3 to make absolute errors nearly Gaussian so that z > 3 flags few healthy
    voxels (:func:`~normcore.imaging.anomaly.scored_errors`); intensity_inset_mm: the intensity normalisation's
    lower anchor is taken this far inside the brain mask's edge, so that a mask a voxel wider or narrower barely
    changes the input (:func:`~normcore.imaging.preprocess.normalise_intensity`; 0 takes it over the whole mask);
    index_within_template: the index ranks only voxels inside the MNI template's brain on the grid (a registered
    mask's voxels outside it are a leak or a misregistration, where fewer healthy scans define the statistics;
    :func:`~normcore.imaging.anomaly.index_region`); headline_index: which abnormality index (a key of
    :data:`~normcore.imaging.anomaly.TOPS`) is the scan's headline number: the ``abnormality_index`` /
    ``healthy_centile`` that ``mri-score`` prints and tables and reports lead with (every index is computed and
    written either way). All seven default to the behaviour of models fitted
    before them (BENCHMARKS.md: quiet z-maps, cross-fitted reference, an index that does not follow the mask's edge).
    """

    grid: dict
    ae_channels: list[int]
    latent_channels: int
    patch: int
    dim: int
    depth: int
    heads: int
    ae_epochs: int
    ae_batch: int
    ae_lr: float
    kl_weight: float
    dit_steps: int
    dit_batch: int
    dit_lr: float
    ema_decay: float
    vlb_weight: float
    timesteps: int
    levels: list[int]
    ddim_steps: int
    plain_level: int
    chunk: int
    prior_residual: bool = True
    clip_x0: float = 6.0
    error_scale: str = "none"
    edge_erosion: int = 0
    error_power: float = 1.0
    index_margin: int = 0
    intensity_inset_mm: float = 0.0
    index_within_template: bool = False
    headline_index: str = "top1"

    ERROR_SCALES = ("none", "scan-median")

    def __post_init__(self) -> None:
        if self.error_scale not in self.ERROR_SCALES:
            raise InputError(f"error_scale {self.error_scale!r}: use one of {list(self.ERROR_SCALES)}")
        if not isinstance(self.edge_erosion, int) or isinstance(self.edge_erosion, bool) or self.edge_erosion < 0:
            raise InputError(f"edge_erosion {self.edge_erosion!r}: a number of voxels, 0 or more")
        if not isinstance(self.index_margin, int) or isinstance(self.index_margin, bool) or self.index_margin < 0:
            raise InputError(f"index_margin {self.index_margin!r}: a number of voxels, 0 or more")
        if isinstance(self.error_power, bool) or not isinstance(self.error_power, int | float) \
                or not 0 < self.error_power <= 1:
            raise InputError(f"error_power {self.error_power!r}: a number in (0, 1]")
        if isinstance(self.intensity_inset_mm, bool) or not isinstance(self.intensity_inset_mm, int | float) \
                or not 0 <= self.intensity_inset_mm < 100:
            raise InputError(f"intensity_inset_mm {self.intensity_inset_mm!r}: a depth in mm, 0 or more (below 100)")
        if not isinstance(self.index_within_template, bool):
            raise InputError(f"index_within_template {self.index_within_template!r}: true or false")
        if self.headline_index not in TOPS:
            raise InputError(f"headline_index {self.headline_index!r}: use one of {list(TOPS)}")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, label: str = "imaging configuration") -> ImagingConfig:
        """Build from a dict (a card's or a user's); unknown or missing keys are an error naming them."""
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise InputError(f"{label}: unknown key(s) {unknown}; known keys: {cls.keys()}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in values]
        if missing:
            raise InputError(f"{label}: missing key(s) {missing}")
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **overrides) -> ImagingConfig:
        """A named preset (``cpu``, ``gpu`` or ``tiny``) with ``overrides`` applied (unknown keys refused)."""
        if name not in PRESETS:
            raise InputError(f"unknown imaging configuration {name!r}; use one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)

    def replace(self, **overrides) -> ImagingConfig:
        return ImagingConfig.from_dict({**self.to_dict(), **overrides}, label="configuration overrides")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.keys()}


PRESETS: dict[str, ImagingConfig] = {
    # 4 mm grid, 8 mm latent (4 channels), 150 latent tokens: trains in minutes on a CPU core.
    "cpu": ImagingConfig(grid=CPU_GRID.to_dict(), ae_channels=[8, 32], latent_channels=4, patch=4, dim=128, depth=4,
                         heads=4, ae_epochs=30, ae_batch=4, ae_lr=2e-3, kl_weight=1e-4, dit_steps=2500, dit_batch=16,
                         dit_lr=3e-4, ema_decay=0.995, vlb_weight=1e-3, timesteps=1000,
                         levels=[50, 100, 150, 200, 250, 300, 350, 400], ddim_steps=8, plain_level=250, chunk=4,
                         error_scale="scan-median", edge_erosion=1, error_power=2 / 3, index_margin=1,
                         intensity_inset_mm=10.0, index_within_template=True,
                         headline_index="peak"),
    # 2 mm grid, 8 mm latent, 1200 latent tokens: the same code at GPU scale.
    "gpu": ImagingConfig(grid=GPU_GRID.to_dict(), ae_channels=[32, 64, 128], latent_channels=4, patch=2, dim=384,
                         depth=8, heads=6, ae_epochs=200, ae_batch=4, ae_lr=1e-3, kl_weight=1e-4, dit_steps=30000,
                         dit_batch=32, dit_lr=2e-4, ema_decay=0.999, vlb_weight=1e-3, timesteps=1000,
                         levels=[50, 100, 150, 200, 250, 300, 350, 400, 450, 500], ddim_steps=20, plain_level=250,
                         chunk=8, error_scale="scan-median", edge_erosion=1, error_power=2 / 3, index_margin=1,
                         intensity_inset_mm=10.0, index_within_template=True,
                         headline_index="peak"),
    # For tests only: seconds on a CPU.
    "tiny": ImagingConfig(grid=ModelGrid(10.0, (16, 16, 16)).to_dict(), ae_channels=[4, 8], latent_channels=2, patch=2,
                          dim=32, depth=1, heads=2, ae_epochs=2, ae_batch=4, ae_lr=2e-3, kl_weight=1e-4, dit_steps=20,
                          dit_batch=8, dit_lr=1e-3, ema_decay=0.9, vlb_weight=1e-3, timesteps=200, levels=[20, 40],
                          ddim_steps=2, plain_level=30, chunk=4),
}

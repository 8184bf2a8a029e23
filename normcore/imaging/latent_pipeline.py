"""One scan through the diffusion autoencoder: whole-brain latent deviation, brain age and counterfactual ageing, in
the scan's own space (the ``mri-latent`` contract: ``latent.json`` and ``counterfactual_age-<A>.nii.gz``)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from normcore._utils.errors import InputError
from normcore._utils.plausibility import check_ages
from normcore._utils.progress import Progress
from normcore.imaging.brain_age import BrainAge
from normcore.imaging.diffae import Counterfactuals, LatentDeviation, NormativeDiffusionAutoencoder, check_guidance
from normcore.imaging.io import save_nifti
from normcore.imaging.pipeline import ScanInput, prepare_input
from normcore.imaging.preprocess import renormalised, to_native
from normcore.imaging.volumetry import tissue_volume_ml, ventricle_volume_ml

MAX_COUNTERFACTUAL_AGES = 16


@dataclass
class LatentResult:
    """A scan's latent deviation, brain age (None for a model saved without the read-out) and, when ages were asked
    for, its counterfactuals, with run facts."""

    scan: ScanInput
    deviation: LatentDeviation
    counterfactuals: Counterfactuals | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    brain_age: BrainAge | None = None

    @property
    def warnings(self) -> list[str]:
        return list(self.scan.prepared.warnings)

    @property
    def reliable(self) -> bool:
        """False when the scan fails a quality gate: its latent scores are then not to be trusted."""
        return all(g["passed"] for g in self.scan.quality)

    def volumes_ml(self) -> list[dict]:
        """Ventricle and tissue volume (ml, on the model grid) of the reconstruction and of each counterfactual."""
        cf = self.counterfactuals
        if cf is None:
            return []
        grid, brain = self.scan.prepared.grid, self.scan.prepared.brain
        vols = np.concatenate([cf.reconstruction[None], cf.volumes])
        vent = ventricle_volume_ml(vols, grid, brain)
        tissue = tissue_volume_ml(vols, brain[None], grid)
        return [{"age": float(a), "kind": "reconstruction" if i == 0 else "counterfactual",
                 "ventricle_ml": float(vent[i]), "tissue_ml": float(tissue[i])}
                for i, a in enumerate([cf.age, *cf.ages])]

    def native_counterfactuals(self) -> dict[float, tuple[nib.Nifti1Image, nib.Nifti1Image]]:
        """Per requested age: the counterfactual and its difference from the reconstruction, in the scan's space."""
        cf = self.counterfactuals
        if cf is None:
            return {}
        prepared = self.scan.prepared
        return {age: (to_native(prepared, vol, mask_outside=False), to_native(prepared, diff, mask_outside=True))
                for age, vol, diff in zip(cf.ages, cf.volumes, cf.differences(), strict=True)}

    def summary(self) -> dict:
        s = self.scan
        return {"scan": s.name, "age": s.age, "sex": s.sex, "latent_deviation": self.deviation.to_dict(),
                "brain_age": self.brain_age.to_dict() if self.brain_age is not None else None,
                "semantic": [float(v) for v in self.counterfactuals.semantic] if self.counterfactuals else None,
                "counterfactual_mode": self.counterfactuals.mode if self.counterfactuals else None,
                "counterfactual_age_guidance": self.counterfactuals.guidance if self.counterfactuals else None,
                "volumes_ml": self.volumes_ml(), "registration_metric": s.prepared.registration_metric,
                "acquisition": s.prepared.facts, "quality": s.quality, "scores_reliable": self.reliable,
                "warnings": self.warnings, "timings_s": self.timings, "seconds": round(self.seconds, 2)}


def parse_ages(text: str | list | None) -> list[float]:
    """Counterfactual ages from "40,60,80" (or a list); empty for None or an empty string."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        ages = [float(a) for a in items]
    except (TypeError, ValueError):
        raise InputError(f"counterfactual ages {text!r}: give numbers of years separated by commas") from None
    if len(ages) > MAX_COUNTERFACTUAL_AGES:
        raise InputError(f"{len(ages)} counterfactual ages: at most {MAX_COUNTERFACTUAL_AGES} at once")
    check_ages(np.array(ages), "counterfactual ages")
    return ages


def analyse_prepared(model: NormativeDiffusionAutoencoder, scan_input: ScanInput, at_ages=(), mode: str = "both",
                     progress: Progress | None = None, age_guidance: float | None = None) -> LatentResult:
    """Latent deviation of a preprocessed scan and its counterfactuals at ``at_ages`` (none when empty), decoded with
    ``age_guidance`` (default: the model's; see ``NormativeDiffusionAutoencoder.counterfactual``)."""
    if scan_input.prepared.grid != model.grid:
        raise InputError("the scan was preprocessed for another model grid than this diffusion autoencoder's")
    # a scan prepared for a restoration model fitted with another intensity normalisation: this model's own
    prepared = renormalised(scan_input.prepared, model.config.intensity_inset_mm)
    if prepared is not scan_input.prepared:
        scan_input = dataclasses.replace(scan_input, prepared=prepared)
    targets = parse_ages(at_ages)
    start = time.perf_counter()
    latents = model.encode(scan_input.prepared.volume)[0]  # once, for the semantic vector and the brain age
    semantic = model.semantic_of_latents(latents)
    deviation = model.latent_deviation(semantic, [scan_input.age], [scan_input.sex])[0]
    brain_age = model.brain_age_of_latents(latents, [scan_input.age])
    scored_s = time.perf_counter() - start
    cf = model.counterfactual(scan_input.prepared.volume, scan_input.age, scan_input.sex, targets, mode,
                              age_guidance=age_guidance, progress=progress) if targets else None
    total = time.perf_counter() - start
    timings = {"latent_scores": round(scored_s, 2), "counterfactuals": round(total - scored_s, 2)}
    return LatentResult(scan_input, deviation, cf, total, timings, brain_age[0] if brain_age else None)


def analyse_scan(model: NormativeDiffusionAutoencoder, scan, age: float, sex, mask=None, name: str | None = None,
                 register: bool = True, at_ages=(), mode: str = "both",
                 progress: Progress | None = None, age_guidance: float | None = None) -> LatentResult:
    """Load and preprocess one scan (path or bytes), then :func:`analyse_prepared`."""
    start = time.perf_counter()
    parse_ages(at_ages)  # refused before the preprocessing
    if age_guidance is not None:
        check_guidance(age_guidance)
    scan_input = prepare_input(model, scan, age, sex, mask, name, register, progress)
    prepared_s = time.perf_counter() - start
    result = analyse_prepared(model, scan_input, at_ages, mode, progress, age_guidance)
    result.seconds += prepared_s
    result.timings = {"preprocessing": round(prepared_s, 2), **result.timings}
    return result


def age_label(age: float) -> str:
    """``40`` for whole years, ``40.5`` otherwise (the ``<A>`` of ``counterfactual_age-<A>.nii.gz``)."""
    return f"{age:g}"


def export_latent(result: LatentResult, out_dir: str | Path) -> dict[str, str]:
    """Write ``counterfactual_age-<A>.nii.gz``, ``counterfactual_age-<A>_difference.nii.gz`` and ``latent.json``
    into ``out_dir`` (the scan's own space; each file atomically, the JSON last)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for age, (vol, diff) in result.native_counterfactuals().items():
        stem = f"counterfactual_age-{age_label(age)}"
        files[stem] = str(save_nifti(vol, out / f"{stem}.nii.gz"))
        files[f"{stem}_difference"] = str(save_nifti(diff, out / f"{stem}_difference.nii.gz"))
    summary = {**result.summary(), "files": files}
    tmp = out / f".latent.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(out / "latent.json")
    return files

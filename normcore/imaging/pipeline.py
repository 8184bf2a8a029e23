"""One scan end to end: load, validate, preprocess, restore, score, map back to the scan's space."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from normcore._utils.errors import InputError
from normcore._utils.plausibility import check_ages
from normcore._utils.progress import Progress, as_progress
from normcore.imaging.acquisition import check as check_acquisition
from normcore.imaging.acquisition import gates as quality_gates
from normcore.imaging.brain_age import BrainAge
from normcore.imaging.io import load_mask, load_volume, save_nifti
from normcore.imaging.latent_space import LatentSpaceModel, parse_sex
from normcore.imaging.model import ImagingNormativeModel, ImagingScore
from normcore.imaging.preprocess import PreparedScan, prepare_scan, to_native
from normcore.imaging.resampling import ResamplingBand, check_resamplings, resampling_band, unavailable_reason

MAPS = ("restoration", "anomaly", "zmap")


@dataclass
class ScanResult:
    """A scored scan: the preprocessed input, the score on the model grid and run facts."""

    name: str
    age: float
    sex: str
    prepared: PreparedScan
    score: ImagingScore
    seconds: float
    quality: list[dict] = field(default_factory=list)  # quality gates (normcore.imaging.acquisition.gates)
    band: ResamplingBand | None = None  # the centile over resampled versions of the scan (resampling.py), if asked
    band_unavailable: str | None = None  # why a band that was asked for could not be made
    brain_age: BrainAge | None = None  # None for a model saved without the read-out (normcore.imaging.brain_age)

    @property
    def warnings(self) -> list[str]:
        extra = [f"no resampling band: {self.band_unavailable}"] if self.band_unavailable else []
        return self.prepared.warnings + self.score.warnings + extra

    def as_input(self) -> ScanInput:
        """The scan as preprocessed for this model (to analyse it further without preprocessing it again)."""
        return ScanInput(self.name, self.age, 1 if self.sex == "M" else 0, self.prepared, self.quality)

    @property
    def index_reliable(self) -> bool:
        """False when the scan fails a quality gate: its index and centile are then not to be trusted."""
        return all(g["passed"] for g in self.quality)

    def native_maps(self) -> dict[str, nib.Nifti1Image]:
        """Restoration, anomaly map and z-map in the original scan's voxel space."""
        grids = {"restoration": self.score.restoration, "anomaly": self.score.anomaly, "zmap": self.score.zmap}
        return {k: to_native(self.prepared, v, mask_outside=k != "restoration") for k, v in grids.items()}

    def summary(self) -> dict:
        return {"scan": self.name, "age": self.age, "sex": self.sex, "method": self.score.method,
                "abnormality_index": self.score.index, "healthy_centile": self.score.centile,
                "healthy_reference_n": self.score.n_reference, "healthy_reference_scheme": self.score.reference_scheme,
                "healthy_centile_reproducibility": self.score.reproducibility,
                "healthy_centile_smoothing_shift": self.score.smoothing_shift,
                "healthy_centile_band": self.band.to_dict() if self.band else None,
                "index_inset_mm": self.score.index_inset_mm, "headline_index": self.score.headline,
                "latent_mask_share": self.score.latent_mask_share,
                "registration_metric": self.prepared.registration_metric, "acquisition": self.prepared.facts,
                "quality": self.quality, "index_reliable": self.index_reliable,
                "brain_age": self.brain_age.to_dict() if self.brain_age is not None else None,
                "warnings": self.warnings,
                "seconds": round(self.seconds, 2)}


@dataclass
class ScanInput:
    """A validated, preprocessed scan with its age and sex and the quality gates of the model it is for."""

    name: str
    age: float
    sex_code: int
    prepared: PreparedScan
    quality: list[dict]
    prenormalised: bool = False  # the volume's intensities were given already normalised (prepare_input)

    @property
    def sex(self) -> str:
        return "M" if self.sex_code else "F"


def prepare_input(model: LatentSpaceModel, scan, age: float, sex, mask=None, name: str | None = None,
                  register: bool = True, progress: Progress | None = None,
                  normalised_inset_mm: float | None = None) -> ScanInput:
    """Validate age and sex, load the scan (path or bytes) and its optional mask, preprocess it onto the model's
    grid, and check it against the model's training acquisitions (warnings and quality gates).

    ``normalised_inset_mm``: the scan is a prepared volume whose intensities normalcore already normalised with this
    ``intensity_inset_mm`` (the demo scans record it); when it is the model's setting they are kept
    (:func:`~normcore.imaging.preprocess.prepare_scan`'s ``prenormalised``), otherwise normalised as usual."""
    try:
        age = float(age)
    except (TypeError, ValueError):
        raise InputError(f"age {age!r}: expected a number of years") from None
    check_ages(np.array([age]), "the scan's age")
    sex_code = parse_sex(sex)
    name = name or (Path(scan).name if isinstance(scan, str | Path) else "uploaded scan")
    img = load_volume(scan, name=name)
    brain = load_mask(mask, img) if mask is not None else None
    inset = float(model.config.intensity_inset_mm)
    prenormalised = normalised_inset_mm is not None and float(normalised_inset_mm) == inset
    prepared = prepare_scan(img, model.grid, mask=brain, register=register, progress=as_progress(progress),
                            intensity_inset_mm=inset, prenormalised=prenormalised)
    envelope, grid_mm = getattr(model, "acquisition_", None), float(model.grid.spacing_mm)
    prepared.warnings += check_acquisition(prepared.facts, envelope, grid_mm)
    return ScanInput(name, age, sex_code, prepared, quality_gates(prepared.facts, envelope, grid_mm), prenormalised)


def score_scan(model: ImagingNormativeModel, scan, age: float, sex, mask=None, name: str | None = None,
               register: bool = True, method: str = "kl-inpaint", seed: int | None = None,
               progress: Progress | None = None, normalised_inset_mm: float | None = None,
               resamplings: int = 0) -> ScanResult:
    """Score one scan (path or bytes; optional brain mask or label map, path or bytes; ``normalised_inset_mm``: as
    :func:`prepare_input`); with ``resamplings`` K > 0 also the band of its centile over K resampled versions
    (:mod:`~normcore.imaging.resampling`; a scan that cannot be resampled gets a warning saying why instead)."""
    progress = as_progress(progress)
    resamplings = check_resamplings(resamplings)
    start = time.perf_counter()
    scan_input = prepare_input(model, scan, age, sex, mask, name, register, progress, normalised_inset_mm)
    prepared = scan_input.prepared
    score = model.score(prepared.volume, prepared.brain, scan_input.age, scan_input.sex_code,
                        method=method, seed=seed, progress=progress)
    band, why = None, None
    if resamplings:
        why = unavailable_reason(prepared, scan_input.prenormalised)
        if why is None:
            band = resampling_band(model, prepared, score, scan_input.age, scan_input.sex_code, resamplings, method,
                                   register=register, progress=progress)
    brain_age = model.brain_age(prepared.volume, [scan_input.age])
    return ScanResult(scan_input.name, scan_input.age, scan_input.sex, prepared, score,
                      time.perf_counter() - start, scan_input.quality, band, why, brain_age[0] if brain_age else None)


def score_many(model: ImagingNormativeModel, items: list[dict], method: str = "kl-inpaint", out: dict | None = None,
               progress: Progress | None = None) -> dict:
    """Score several scans in turn into ``out`` = {"results", "lesions", "errors"} (kept when cancelled).

    Each item has name, scan, age, sex and optionally mask, register (default True), normalised_inset_mm (see
    :func:`prepare_input`), resamplings (:func:`score_scan`; default 0) and lesion_mask (a known lesion on the model
    grid, for display). A scan with bad input records its message under "errors" and the others go on; progress is
    one bar over all scans (preprocessing half, restoration half; a resampling band runs the bar over again).
    """
    progress = as_progress(progress)
    out = out if out is not None else {}
    for key in ("results", "lesions", "errors"):
        out.setdefault(key, {})
    n = len(items)
    for i, item in enumerate(items):
        name = item["name"]

        def report(stage, done, total, i=i, name=name, **_):
            local = done / total if total else 0.0
            share = 50 + 50 * local if stage == "restoration" else 50 * local
            progress.update(f"{name} ({i + 1}/{n}): {stage}", int(i * 100 + share), n * 100)

        sub = Progress(callback=report, cancel_event=progress.cancel_event)
        try:
            result = score_scan(model, item["scan"], item["age"], item["sex"], mask=item.get("mask"), name=name,
                                register=item.get("register", True), method=method, progress=sub,
                                normalised_inset_mm=item.get("normalised_inset_mm"),
                                resamplings=item.get("resamplings", 0))
            lesion = None
            if item.get("lesion_mask") is not None:
                lesion = load_mask(item["lesion_mask"], model.grid.empty_image(), name=f"{name} lesion mask")
        except InputError as exc:
            out["errors"][name] = str(exc)
            continue
        out["errors"].pop(name, None)
        out["results"][name] = result
        out["lesions"][name] = lesion
    progress.update("done", n * 100, n * 100)
    return out


def export_maps(result: ScanResult, out_dir: str | Path) -> dict[str, str]:
    """Write the three maps (NIfTI, scan space) and result.json into ``out_dir``; each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: str(save_nifti(img, out / f"{k}.nii.gz")) for k, img in result.native_maps().items()}
    summary = {**result.summary(), "files": files}
    tmp = out / f".result.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(out / "result.json")
    return files


def nifti_bytes(img: nib.Nifti1Image) -> bytes:
    """A NIfTI image as .nii.gz bytes (for downloads)."""
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()

"""A cohort of scans (a folder and a participants table) scored into one table, one row per participant.

Each scan is scored exactly as ``mri-score`` scores it alone (same preprocessing, quality gates and seed), so a
row does not depend on which other scans are in the cohort. Under ``torchrun`` the scans are shared across the
ranks (scan ``i`` on rank ``i mod world``), each rank writes the maps of its own scans, and the rows are gathered
on every rank in the participants table's order: the table equals a one-process run's, value for value, for the
same seed and device (registration included, since each scan's registration runs in one process either way).
A scan with bad input (unreadable file, missing scan or mask, age outside the model) gets its message in the
``error`` column and the others go on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from normcore._utils.distributed import distributed_context, owned_chunks
from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.imaging.cohort import NiftiFolder, read_participants
from normcore.imaging.model import TOPS, ImagingNormativeModel
from normcore.imaging.pipeline import ScanResult, export_maps, score_scan

COLUMNS = ("subject_id", "age", "sex", "method", "abnormality_index", "healthy_centile",
           *(f"abnormality_index_{k}" for k in TOPS), *(f"healthy_centile_{k}" for k in TOPS),
           "healthy_reference_n", "healthy_reference_scheme", "index_reliable", "failed_gates",
           "latent_mask_share", "registration_metric", "mask_source", "warnings", "maps", "error", "headline_index",
           "healthy_centile_band_low", "healthy_centile_band_high", "brain_age", "brain_age_gap",
           "brain_age_gap_centile")
"""The table's columns (a public contract: extend, never rename). ``abnormality_index`` and ``healthy_centile`` are
the headline index's values that ``mri-score`` prints (the model's ``headline_index``, named in the column of that
name: ``top1`` for models fitted before the peak index, ``peak`` for the shipped one); ``failed_gates`` and
``warnings`` are "; "-joined; ``maps`` is the scan's map folder (empty without ``maps_dir``); ``error`` is empty for
a scored scan; ``healthy_centile_band_low``/``_high`` are the headline centile's range over the scan and its resliced
versions (``resamplings``; :mod:`~normcore.imaging.resampling`), empty without them; ``brain_age`` (years),
``brain_age_gap`` (years, age-bias corrected) and ``brain_age_gap_centile`` (0-100 among the model's cross-fitted
healthy scans) are the brain-age read-out's (:mod:`~normcore.imaging.brain_age`), empty for a model without one."""


def _row(subject_id: str, age: float, sex: str, method: str) -> dict:
    row = dict.fromkeys(COLUMNS, np.nan)
    row.update(subject_id=subject_id, age=age, sex=sex, method=method, failed_gates="", warnings="", maps="",
               error="", healthy_reference_scheme="", mask_source="", headline_index="")
    return row


def _scored_row(row: dict, result: ScanResult) -> dict:
    score = result.score
    row.update(sex=result.sex, abnormality_index=score.index[score.headline],
               healthy_centile=score.centile[score.headline], headline_index=score.headline,
               healthy_reference_n=score.n_reference, healthy_reference_scheme=score.reference_scheme,
               index_reliable=result.index_reliable,
               failed_gates="; ".join(g["gate"] for g in result.quality if not g["passed"]),
               latent_mask_share=score.latent_mask_share, registration_metric=result.prepared.registration_metric,
               mask_source=result.prepared.facts.get("mask_source", ""), warnings="; ".join(result.warnings))
    for k in TOPS:
        row[f"abnormality_index_{k}"] = score.index[k]
        row[f"healthy_centile_{k}"] = score.centile[k]
    if result.band is not None:
        row.update(healthy_centile_band_low=result.band.low, healthy_centile_band_high=result.band.high)
    if result.brain_age is not None:
        row.update(brain_age=result.brain_age.predicted_age, brain_age_gap=result.brain_age.gap_years,
                   brain_age_gap_centile=100 * result.brain_age.centile)
    return row


def map_folder(maps_dir: str | Path, subject_id: str) -> Path:
    """The folder of a participant's maps: its id with anything but letters, digits, '-', '_' and '.' replaced
    (and no leading dots), so it always lies inside ``maps_dir``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", subject_id).lstrip(".") or "_"
    return Path(maps_dir) / safe


def map_folders(maps_dir: str | Path, subject_ids: list[str]) -> list[Path]:
    """:func:`map_folder` of each id; ids that would share a folder (e.g. ``a/1`` and ``a_1``) get their row number
    appended, so no participant's maps overwrite another's."""
    folders = [map_folder(maps_dir, sid) for sid in subject_ids]
    seen: dict[Path, int] = {}
    for f in folders:
        seen[f] = seen.get(f, 0) + 1
    return [f.with_name(f"{f.name}-row{i + 1}") if seen[f] > 1 else f for i, f in enumerate(folders)]


def _gather(rows: dict[int, dict]) -> dict[int, dict]:
    """Every rank's rows on every rank (the rows themselves in a single process)."""
    if distributed_context()[1] == 1:
        return rows
    import torch.distributed as dist

    parts: list[dict[int, dict] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    return {i: r for part in parts for i, r in (part or {}).items()}


def score_cohort(model: ImagingNormativeModel, images: str | Path, participants: str | Path,
                 masks: str | Path | None = None, method: str = "kl-inpaint", seed: int | None = 0,
                 register: bool = True, maps_dir: str | Path | None = None,
                 progress: Progress | None = None, resamplings: int = 0) -> pd.DataFrame:
    """Score every participant's scan (files in ``images`` whose names start with the id) into a table of
    :data:`COLUMNS`, in the participants table's order; with ``masks``, each scan's brain mask or label map (same
    naming); with ``maps_dir``, each scan's maps and ``result.json`` in ``maps_dir/<id>/`` (as ``mri-score --out``;
    :func:`map_folders`); with ``resamplings`` K, each scan's centile band over K resliced versions.
    Raises :class:`InputError` only for problems of the whole cohort (no such folder, unreadable table)."""
    progress = as_progress(progress)
    images = Path(images)
    if not images.is_dir():
        raise InputError(f"{images}: not a folder of NIfTI scans")
    if masks is not None and not Path(masks).is_dir():
        raise InputError(f"{masks}: not a folder of brain masks")
    table = read_participants(participants)
    if table.id.duplicated().any():
        dup = table.id[table.id.duplicated()].iloc[0]
        raise InputError(f"{participants}: subject id {dup} appears more than once")
    n = len(table)
    scans, mask_files = NiftiFolder(images), NiftiFolder(masks) if masks is not None else None
    folders = map_folders(maps_dir, list(table.id)) if maps_dir is not None else None
    owned = list(owned_chunks(n))
    rows: dict[int, dict] = {}
    for done, i in enumerate(owned):
        sid = table.id[i]

        def report(stage, step, total, done=done, sid=sid, **_):
            share = step / total if total else 0.0
            progress.update(f"{sid} ({done + 1}/{len(owned)}): {stage}", int(100 * (done + share)), 100 * len(owned))

        sub = Progress(callback=report, cancel_event=progress.cancel_event)
        sub.update("preprocessing", 0, 1)
        age, sex = float(table.age[i]), table.sex[i]
        row = _row(sid, age, sex, method)
        try:
            scan = scans.find(sid)
            if scan is None:
                raise InputError(f"no scan in {images} whose name starts with {sid}")
            mask = None
            if mask_files is not None:
                mask = mask_files.find(sid)
                if mask is None:
                    raise InputError(f"no mask in {masks} whose name starts with {sid}")
            result = score_scan(model, scan, age, sex, mask=mask, name=scan.name, register=register, method=method,
                                seed=seed, progress=sub, resamplings=resamplings)
        except InputError as exc:
            row["error"] = str(exc)
        else:
            _scored_row(row, result)
            if folders is not None:
                folder = folders[i]
                export_maps(result, folder)
                row["maps"] = str(folder)
        rows[i] = row
    progress.update("done", 100 * len(owned), 100 * len(owned))
    rows = _gather(rows)
    return pd.DataFrame([rows[i] for i in range(n)], columns=list(COLUMNS))

"""A folder of scans + a participants table -> preprocessed volumes on the model grid."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.imaging.grid import ModelGrid
from normcore.imaging.io import load_mask, load_volume
from normcore.imaging.preprocess import prepare_scan

ID_COLUMNS = ("subject_id", "participant_id", "sub_id", "id", "subject")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Cohort:
    """Preprocessed scans: ``volumes``/``brains`` (N, X, Y, Z) on ``grid`` with ids, ages and sexes."""

    ids: list[str]
    ages: np.ndarray
    sexes: list[str]
    volumes: np.ndarray
    brains: np.ndarray
    grid: ModelGrid
    warnings: list[str]
    facts: list[dict] = field(default_factory=list)  # per scan: voxel size, coverage, overlap (acquisition.py)

    def subset(self, idx) -> Cohort:
        idx = np.asarray(idx, int)
        return Cohort([self.ids[i] for i in idx], self.ages[idx], [self.sexes[i] for i in idx], self.volumes[idx],
                      self.brains[idx], self.grid, self.warnings, [self.facts[i] for i in idx] if self.facts else [])


def read_participants(path: str | Path) -> pd.DataFrame:
    """Participants table with columns id (one of ID_COLUMNS), age and sex; rows with missing values refused."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    cols = {c.lower(): c for c in df.columns}
    id_col = next((cols[c] for c in ID_COLUMNS if c in cols), None)
    missing = [n for n, c in (("subject id", id_col), ("age", cols.get("age")), ("sex", cols.get("sex"))) if c is None]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (id column: one of {', '.join(ID_COLUMNS)})")
    out = pd.DataFrame({"id": df[id_col].astype(str), "age": pd.to_numeric(df[cols["age"]], errors="coerce"),
                        "sex": df[cols["sex"]].astype(str)})
    bad = out.index[out.age.isna()].tolist()
    if bad:
        raise InputError(f"{path}: non-numeric or missing age in {len(bad)} row(s), first at row {bad[0] + 2}")
    return out


class NiftiFolder:
    """The NIfTI files of a folder, listed once, found by subject id (the first file, in name order, whose name
    starts with the id): a cohort of N participants costs one listing and N binary searches, not N listings."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.names = sorted(p.name for p in self.folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))

    def find(self, subject_id: str) -> Path | None:
        i = bisect.bisect_left(self.names, subject_id)
        return self.folder / self.names[i] if i < len(self.names) and self.names[i].startswith(subject_id) else None


def find_file(folder: Path, subject_id: str) -> Path | None:
    """The NIfTI file in ``folder`` whose name starts with ``subject_id`` (None if absent; see :class:`NiftiFolder`
    for many ids)."""
    return NiftiFolder(folder).find(subject_id)


def load_cohort(images: str | Path, participants: str | Path, grid: ModelGrid, masks: str | Path | None = None,
                progress: Progress | None = None, ids: list[str] | None = None,
                intensity_inset_mm: float = 0.0) -> Cohort:
    """Load, validate, register and resample every participant's scan (and mask, when a mask folder is given);
    with ``ids``, only those participants, in that order (e.g. a model card's validation or test ids).
    ``intensity_inset_mm``: the model's normalisation setting (:func:`~normcore.imaging.preprocess.prepare_scan`)."""
    progress = as_progress(progress)
    images = Path(images)
    if not images.is_dir():
        raise InputError(f"{images}: not a folder of NIfTI scans")
    table = read_participants(participants)
    if ids is not None:
        unknown = sorted(set(ids) - set(table.id))
        if unknown:
            raise InputError(f"{participants}: no row for subject id(s) {', '.join(unknown[:5])}")
        table = table.set_index("id", drop=False).loc[list(ids)].reset_index(drop=True)
    rows, missing = [], []
    scans = NiftiFolder(images)
    mask_files = NiftiFolder(masks) if masks is not None else None
    for row in table.itertuples():
        path = scans.find(row.id)
        (rows if path else missing).append((row, path))
    if not rows:
        raise InputError(f"no scan in {images} matches a subject id of {participants}")
    vols, brains, warnings, facts = [], [], [], []
    if missing:
        warnings.append(f"{len(missing)} participant(s) have no scan in {images} and were skipped")
    for i, (row, path) in enumerate(rows):
        progress.update("preprocessing", i, len(rows))
        img = load_volume(path)
        mask = None
        if mask_files is not None:
            mpath = mask_files.find(row.id)
            if mpath is None:
                raise InputError(f"no mask for {row.id} in {masks}")
            mask = load_mask(mpath, img)
        prep = prepare_scan(img, grid, mask=mask, intensity_inset_mm=intensity_inset_mm)
        warnings += [f"{row.id}: {w}" for w in prep.warnings]
        vols.append(prep.volume)
        brains.append(prep.brain)
        facts.append(prep.facts)
    progress.update("preprocessing", len(rows), len(rows))
    return Cohort([r.id for r, _ in rows], np.array([r.age for r, _ in rows], float), [r.sex for r, _ in rows],
                  np.stack(vols).astype(np.float32), np.stack(brains), grid, warnings, facts)


def split_indices(n: int, validation: float, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / held-out test indices (validation at least 4 subjects)."""
    perm = np.random.default_rng(seed).permutation(n)
    test, rest = perm[:holdout], perm[holdout:]
    n_val = max(4, int(round(validation * len(rest))))
    if len(rest) - n_val < 4:
        raise InputError(f"{n} scans are too few for training (need >= 8 after {holdout} held out)")
    return np.sort(rest[n_val:]), np.sort(rest[:n_val]), np.sort(test)

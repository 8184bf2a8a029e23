"""Cross-fitted healthy reference: every healthy scan restored by a denoiser that never trained on it.

A restoration model's voxel error statistics and the reference distribution of its abnormality index must come from
healthy scans its denoiser did not see (a training scan is restored too well). A validation cohort gives that, but
only a few scans (tens), so the index centile moves in coarse steps and each voxel's standard deviation is itself
uncertain. Cross-fitting uses every healthy scan instead: the scans are split into ``folds`` age-stratified folds;
for each fold a denoiser of the model's configuration is trained on the other folds (on the model's own first stage,
so the error maps are in the same units), and the fold's scans are restored by it. The KL-mask thresholds of each
fold denoiser come from the other half of its held-out fold, so no scan's restoration depends on itself either.
Each scan's reference index is then computed leave-one-out from the others' error maps
(:meth:`ImagingNormativeModel.set_reference`).

The fold denoisers train on ``(folds - 1) / folds`` of the scans, so they restore slightly less well than a model
trained on all of them: the reference is, if anything, conservative (healthy indices a little high).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from normcore._utils.errors import InputError
from normcore._utils.progress import Progress, as_progress
from normcore.imaging.model import METHODS, ImagingNormativeModel

MIN_HELD_OUT = 4  # per fold: two halves of at least two scans (each half's KL thresholds restore the other)


@dataclass
class CrossFitReference:
    """Out-of-fold error maps of healthy scans and how they were made.

    ``errors[method]`` = (scored error maps, scored voxels), each (N, X, Y, Z), in the order of the input scans;
    ``fold[i]`` is the fold scan i was held out in; ``info`` goes to the model card (``reference``).
    """

    errors: dict[str, tuple[np.ndarray, np.ndarray]]
    fold: np.ndarray
    info: dict


def assign_folds(ages, folds: int, seed: int) -> np.ndarray:
    """Fold of each scan, stratified by age: scans sorted by age, each run of ``folds`` spread over all folds."""
    ages = np.asarray(ages, float)
    rng = np.random.default_rng(seed)
    out = np.empty(len(ages), int)
    order = np.argsort(ages, kind="stable")
    for start in range(0, len(order), folds):
        block = order[start:start + folds]
        out[block] = rng.permutation(folds)[:len(block)]
    return out


def _halves(idx: np.ndarray, ages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of a fold, alternating in age order (both span the fold's ages)."""
    order = idx[np.argsort(ages[idx], kind="stable")]
    return order[0::2], order[1::2]


def cross_fit(model: ImagingNormativeModel, volumes: np.ndarray, brains: np.ndarray, ages, sexes, folds: int = 5,
              progress: Progress | None = None) -> CrossFitReference:
    """Out-of-fold restorations and error maps of every healthy scan (see the module docstring).

    ``model`` is fitted; its first stage is shared by the fold denoisers and its configuration and seed set theirs.
    Scans are (N, X, Y, Z) on the model grid like :meth:`ImagingNormativeModel.fit`'s.
    """
    progress = as_progress(progress)
    volumes, brains = np.asarray(volumes, np.float32), np.asarray(brains, bool)
    ages, sexes = np.asarray(ages, float), list(sexes)
    n = len(volumes)
    if folds < 2:
        raise InputError(f"cross-fitting needs at least 2 folds (got {folds})")
    if n < MIN_HELD_OUT * folds:
        raise InputError(f"cross-fitting with {folds} folds needs at least {MIN_HELD_OUT * folds} healthy scans "
                         f"(got {n})")
    fold = assign_folds(ages, folds, model.seed)
    shape = volumes.shape
    errors = {m: (np.zeros(shape, np.float32), np.zeros(shape, bool)) for m in METHODS}
    start, train_n = time.perf_counter(), []
    for k in range(folds):
        stage = f"cross-fit fold {k + 1}/{folds}"
        train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        train_n.append(int(len(train)))
        fold_model = ImagingNormativeModel(model.config, seed=model.seed + 1 + k, device=model.device)
        fold_model.fit_stages(volumes[train], ages[train], [sexes[i] for i in train],
                              lambda _stage, done, total, stage=stage, **info: progress.update(stage, done, total,
                                                                                               **info),
                              autoencoder_from=model)
        first, second = _halves(held, ages)
        for thresholds, restored in ((first, second), (second, first)):
            fold_model.calibrate_kl(volumes[thresholds], ages[thresholds], [sexes[i] for i in thresholds])
            out = fold_model.restore(volumes[restored], ages[restored], [sexes[i] for i in restored], METHODS)
            for m in METHODS:
                maps, scored = fold_model.healthy_errors(volumes[restored], out[m], brains[restored])
                errors[m][0][restored], errors[m][1][restored] = maps, scored
        progress.update("cross-fit", k + 1, folds)
    info = {"scheme": "cross-fitted", "n": int(n), "folds": int(folds), "fold_train_n": train_n,
            "first_stage": "the model's own (shared by the fold denoisers)",
            "kl_thresholds": "from the other half of each held-out fold",
            "seconds": round(time.perf_counter() - start, 1)}
    return CrossFitReference(errors, fold, info)


def use_cross_fitted_reference(model: ImagingNormativeModel, volumes: np.ndarray, brains: np.ndarray, ages, sexes,
                               ids: list[str] | None = None, folds: int = 5, progress: Progress | None = None
                               ) -> CrossFitReference:
    """Cross-fit (:func:`cross_fit`) and make the result the model's voxel statistics and index reference
    (``model.reference_info_`` records the scheme, the number of scans and, when given, their ids)."""
    ref = cross_fit(model, volumes, brains, ages, sexes, folds, progress)
    info = dict(ref.info, **({"ids": list(ids)} if ids is not None else {}))
    model.set_reference(ref.errors, info)
    return ref

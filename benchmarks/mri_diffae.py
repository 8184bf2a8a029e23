"""Benchmark of the normative diffusion autoencoder: brain age, whole-brain deviation, counterfactual ageing, time.

    .venv/bin/python benchmarks/mri_diffae.py [--model models/mri-ixi-diffae-cpu] [--ldm models/mri-ixi-cpu]
        [--parts ixi,synthetic] [--threads 2] [--cache /tmp/normdiff-cache] [--update-card]

IXI part (needs ../shared/data): the shipped model's training and held-out test scans (ids in its card),
preprocessed like any user scan. Brain age: a ridge regression (alpha by cross-validation) from the training scans'
semantic vectors to age, MAE on the held-out scans, next to the same regression on the flattened first-stage latent,
on its top principal components (as many as the vector has numbers) and the mean-age baseline. Reconstruction: DDIM
inversion and decoding against the autoencoder's own image and the scan. Whole-brain deviation: its centiles on the
held-out healthy scans, and the subject-level AUC of the multivariate deviation and of the cosine score when one
real MS lesion mask is implanted in each held-out scan, next to the restoration model's voxel abnormality index (top
1%). The model's own brain-age read-out (normcore.imaging.brain_age, when the model has one): its error and gap
centiles on the held-out healthy scans and the AUC of its gap for the implanted lesions. Counterfactual ageing: the
ventricle and tissue volume of each held-out scan's counterfactuals at 30, 50 and 70 years (three modes) against the
healthy cohort's cross-sectional trend. Time: ``analyse_scan`` end to end (load,
register, scores; and a three-age counterfactual).

Synthetic part: the generator of ``normcore.imaging.synthetic`` has known age effects. A diffusion autoencoder and a
restoration model (both on the IXI model's first stage) are trained on synthetic healthy brains; held-out healthy
brains are compared with (a) the same subjects aged 10 years more than their stated age (diffuse atrophy) and (b)
brains with implanted real MS lesions (AUCs of the semantic scores, the brain-age gap and the voxel index).
Counterfactual validity: for held-out subjects at age A, the generator gives
the same brain at A + 20 (same deformation and noise); the counterfactual's ventricle change is correlated with the
true one, and its difference map with the true difference map.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mri import store_card_metrics  # noqa: E402  (benchmarks/mri.py)

from normcore.imaging.anomaly import voxel_zmap  # noqa: E402
from normcore.imaging.cohort import find_file, load_cohort  # noqa: E402
from normcore.imaging.diffae import COUNTERFACTUAL_MODES, LATENT_PRIORS, NormativeDiffusionAutoencoder  # noqa: E402
from normcore.imaging.latent_pipeline import analyse_scan  # noqa: E402
from normcore.imaging.model import ImagingNormativeModel  # noqa: E402
from normcore.imaging.synthetic import SyntheticBrains, implant_lesion, make_benchmark, real_lesion_masks  # noqa: E402
from normcore.imaging.volumetry import tissue_volume_ml, ventricle_volume_ml  # noqa: E402
from normcore.metrics.imaging import mae, psnr, subject_auc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "mri"
IXI = SHARED / "ixi"
LESIONS = SHARED / "lesion_masks_mni"
CF_AGES = (30.0, 50.0, 70.0)


def cf_variants(guidances: tuple[float, ...]) -> list[tuple[str, str, float]]:
    """(result key, mode, age guidance): every mode plainly, then mode "both" at each other guidance scale."""
    return [(mode, mode, 1.0) for mode in COUNTERFACTUAL_MODES] + [(f"both_guidance_{w:g}", "both", w)
                                                                   for w in guidances if w != 1.0]


def cached_cohort(ids: list[str], grid, cache: Path | None, intensity_inset_mm: float = 0.0):
    """IXI scans of ``ids`` on ``grid`` (registered with their label masks, normalised as the model's config says),
    from a cache file when one exists."""
    key = hashlib.sha256(json.dumps([ids, grid.to_dict(), intensity_inset_mm]).encode()).hexdigest()[:16]
    path = cache / f"ixi-{key}.npz" if cache else None
    if path is not None and path.is_file():
        z = np.load(path)
        return z["volumes"], z["brains"], z["ages"], [str(s) for s in z["sexes"]]
    c = load_cohort(IXI / "t1", IXI / "participants.csv", grid, masks=IXI / "brainmask_labels", ids=ids,
                    intensity_inset_mm=intensity_inset_mm)
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, volumes=c.volumes, brains=c.brains, ages=c.ages, sexes=np.array(c.sexes))
    return c.volumes, c.brains, c.ages, list(c.sexes)


def ridge_mae(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 5, 33)))
    model.fit(x_train, y_train)
    pred = model.predict(x_test)
    return {"mae": round(float(np.abs(pred - y_test).mean()), 2),
            "r": round(float(np.corrcoef(pred, y_test)[0, 1]), 3),
            "alpha": float(model[-1].alpha_), "n_features": int(x_train.shape[1])}


def brain_age(dae: NormativeDiffusionAutoencoder, train, test) -> dict:
    """Ridge brain age from the semantic latent and from the first-stage latent (same scans, same regression)."""
    (vtr, atr), (vte, ate) = train, test
    sem = ridge_mae(dae.semantic(vtr), atr, dae.semantic(vte), ate)
    first = ridge_mae(dae.encode(vtr)[0].flatten(1).cpu().numpy(), atr, dae.encode(vte)[0].flatten(1).cpu().numpy(),
                      ate)
    return {"semantic": sem, "first_stage_latent": first,
            "mean_age_baseline_mae": round(float(np.abs(ate - atr.mean()).mean()), 2), "n_train": len(atr),
            "n_test": len(ate)}


def brain_age_paired(dae: NormativeDiffusionAutoencoder, train, test, seed: int) -> dict:
    """As :func:`brain_age`, with the 95% paired bootstrap interval of MAE(semantic) - MAE(first-stage latent).

    Also the same ridge on the first-stage latent's top principal components (as many as the semantic vector has
    numbers, fitted on the training scans): an unsupervised linear summary of the same size, the comparator that
    says whether the learnt vector carries age more compactly than a linear projection would."""
    (vtr, atr), (vte, ate) = train, test
    first_tr, first_te = dae.encode(vtr)[0].flatten(1).cpu().numpy(), dae.encode(vte)[0].flatten(1).cpu().numpy()
    pca = PCA(min(dae.semantic_dim, len(atr) - 1), svd_solver="full").fit(first_tr)
    err = {}
    for key, tr, te in (("semantic", dae.semantic(vtr), dae.semantic(vte)),
                        ("first_stage_latent", first_tr, first_te),
                        ("first_stage_pca", pca.transform(first_tr), pca.transform(first_te))):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 5, 33))).fit(tr, atr)
        err[key] = np.abs(model.predict(te) - ate)
    idx = np.random.default_rng(seed).integers(0, len(ate), (10000, len(ate)))
    diff = err["semantic"][idx].mean(1) - err["first_stage_latent"][idx].mean(1)
    return {"n_scans": len(ate), "semantic_mae": round(float(err["semantic"].mean()), 2),
            "first_stage_latent_mae": round(float(err["first_stage_latent"].mean()), 2),
            "mae_difference_ci95": [round(float(x), 2) for x in np.percentile(diff, [2.5, 97.5])],
            "first_stage_pca_mae": round(float(err["first_stage_pca"].mean()), 2),
            "first_stage_pca_components": int(pca.n_components_)}


def brain_age_heldout(healthy: dict) -> dict:
    """The read-out on held-out healthy scans: its error, its gaps' centiles among the cross-fitted reference."""
    return {"mae_years": round(float(healthy["brain_age_abs_error"].mean()), 2),
            "gap_years_mean": round(float(healthy["brain_age_gap"].mean()), 2),
            "gap_years_sd": round(float(healthy["brain_age_gap"].std(ddof=1)), 2),
            "centiles": [round(float(c), 3) for c in healthy["brain_age_centile"]],
            "share_above_0.95": round(float(np.mean(healthy["brain_age_centile"] > 0.95)), 3)}


def voxel_indices(ldm: ImagingNormativeModel, vols, brains, ages, sexes, seed: int) -> np.ndarray:
    """The restoration model's abnormality index (top 1%, KL-guided inpainting) of each volume."""
    rest = ldm.restore(vols, ages, sexes, ("kl-inpaint",), seed=seed)["kl-inpaint"]
    mean, std = ldm.error_stats_["kl-inpaint"]
    return np.array([ldm.indices(voxel_zmap(err, mean, std, scored), scored)["top1"]
                     for err, scored in zip(*ldm.healthy_errors(vols, rest, brains), strict=True)])


def deviation_scores(dae: NormativeDiffusionAutoencoder, vols, ages, sexes) -> dict[str, np.ndarray]:
    """The semantic latent's deviation scores and, for a model with the read-out, the brain-age gap and centile."""
    latents = dae.encode(vols)[0]
    devs = dae.latent_deviation(dae.semantic_of_latents(latents), ages, sexes)
    out = {"multivariate_d2": np.array([d.multivariate_d2 for d in devs]),
           "negative_cosine": -np.array([d.cosine_similarity for d in devs]),
           "centile": np.array([d.centile for d in devs])}
    brain_ages = dae.brain_age_of_latents(latents, ages)
    if brain_ages is not None:
        out["brain_age_gap"] = np.array([b.gap_years for b in brain_ages])
        out["brain_age_centile"] = np.array([b.centile for b in brain_ages])
        out["brain_age_abs_error"] = np.array([abs(b.raw_gap_years) for b in brain_ages])
    return out


def aucs(healthy: dict, patients: dict, voxel_h: np.ndarray, voxel_p: np.ndarray) -> dict:
    """Subject AUCs of the latent scores, the brain-age gap (older-looking = more abnormal; when the model has the
    read-out) and the voxel index."""
    labels = np.r_[np.zeros(len(voxel_h)), np.ones(len(voxel_p))]
    out = {k: round(subject_auc(np.r_[healthy[k], patients[k]], labels), 3)
           for k in ("multivariate_d2", "negative_cosine", "brain_age_gap") if k in healthy}
    out["voxel_index_top1"] = round(subject_auc(np.r_[voxel_h, voxel_p], labels), 3)
    return out


def reconstruction(dae: NormativeDiffusionAutoencoder, vols, brains, ages, sexes) -> dict:
    z0, semantic, code = dae.invert(vols, ages, sexes)
    rec = dae.decode_code(code, ages, sexes, semantic)
    ae = dae.decode(z0)
    from normcore.diffusion.samplers import ddim_decode

    cond = dae.conditions(ages, sexes, semantic)
    z_back = ddim_decode(dae._eps, dae.schedule, code, cond, dae.inversion_steps)
    rel = float((z_back - z0).abs().mean() / z0.abs().mean())
    return {"latent_round_trip_rel_mae": round(rel, 4),
            "mae_vs_autoencoder": round(float(np.mean([mae(r, a, b) for r, a, b in zip(rec, ae, brains,
                                                                                        strict=True)])), 4),
            "mae_vs_scan": round(float(np.mean([mae(r, v, b) for r, v, b in zip(rec, vols, brains, strict=True)])), 4),
            "autoencoder_mae_vs_scan": round(float(np.mean([mae(a, v, b) for a, v, b in zip(ae, vols, brains,
                                                                                             strict=True)])), 4),
            "psnr_vs_scan": round(float(np.mean([psnr(r, v, b) for r, v, b in zip(rec, vols, brains,
                                                                                  strict=True)])), 2)}


def slope_per_decade(ages: np.ndarray, values: np.ndarray) -> float:
    return float(np.polyfit(np.asarray(ages, float), np.asarray(values, float), 1)[0] * 10)


def counterfactual_trend(dae: NormativeDiffusionAutoencoder, vols, brains, ages, sexes,
                         guidances: tuple[float, ...] = ()) -> dict:
    """Per mode: mean within-subject slope (ml per decade) of ventricle and tissue volume over CF_AGES, next to the
    healthy cohort's cross-sectional slopes and volumes at those ages."""
    healthy = dae.healthy_volumes()
    out = {"healthy": {"ventricle_ml_per_decade": round(slope_per_decade(healthy.age, healthy.ventricle_ml), 3),
                       "tissue_ml_per_decade": round(slope_per_decade(healthy.age, healthy.tissue_ml), 2),
                       "n": len(healthy)}}
    for key, mode, w in cf_variants(guidances):
        vent, tissue = [], []
        for v, b, a, s in zip(vols, brains, ages, sexes, strict=True):
            cf = dae.counterfactual(v, a, s, CF_AGES, mode, age_guidance=w)
            vent.append(slope_per_decade(CF_AGES, ventricle_volume_ml(cf.volumes, dae.grid, b)))
            tissue.append(slope_per_decade(CF_AGES, tissue_volume_ml(cf.volumes, b[None], dae.grid)))
        out[key] = {"ventricle_ml_per_decade": round(float(np.mean(vent)), 3),
                     "ventricle_slope_sd": round(float(np.std(vent)), 3),
                     "share_ventricles_growing": round(float(np.mean(np.array(vent) > 0)), 2),
                     "tissue_ml_per_decade": round(float(np.mean(tissue)), 2)}
    return out


def first_stage_trend(dae: NormativeDiffusionAutoencoder, vols, brains, ages) -> dict:
    """The cross-sectional ventricle and tissue slopes (ml per decade) of healthy scans as given and of the same scans
    through the first-stage autoencoder alone (decode(encode(scan))): how much of the cohort's age trend the first
    stage can show at all, the ceiling of any counterfactual decoded through it."""
    brains = np.asarray(brains, bool)
    recon = dae.decode(dae.encode(vols)[0])  # both work through the model's chunks
    out = {"n": len(ages)}
    for key, v in (("scans", vols), ("reconstructions", recon)):
        vent, tissue = ventricle_volume_ml(v, dae.grid, brains), tissue_volume_ml(v, brains, dae.grid)
        out[key] = {"ventricle_ml_per_decade": round(slope_per_decade(ages, vent), 3),
                    "tissue_ml_per_decade": round(slope_per_decade(ages, tissue), 2)}
    return out


def timings(dae: NormativeDiffusionAutoencoder, ids: list[str], ages, sexes) -> dict:
    scores, cfs = [], []
    for sid, age, sex in list(zip(ids, ages, sexes, strict=True))[:5]:
        scan, mask = find_file(IXI / "t1", sid), find_file(IXI / "brainmask_labels", sid)
        t = time.perf_counter()
        analyse_scan(dae, scan, age, sex, mask=mask)
        scores.append(time.perf_counter() - t)
        t = time.perf_counter()
        analyse_scan(dae, scan, age, sex, mask=mask, at_ages=[40, 60, 80])
        cfs.append(time.perf_counter() - t)
    return {"latent_scores_s": {"median": round(float(np.median(scores)), 2), "all": [round(x, 2) for x in scores]},
            "with_three_counterfactuals_s": {"median": round(float(np.median(cfs)), 2),
                                             "all": [round(x, 2) for x in cfs]}}


def ixi_part(model_dir: Path, ldm_dir: Path, seed: int, cache: Path | None, guidances: tuple[float, ...] = ()
             ) -> dict:
    dae = NormativeDiffusionAutoencoder.load(model_dir)
    ldm = ImagingNormativeModel.load(ldm_dir)
    data = dae.card_.get("data", {})
    if not data.get("test_ids") or not IXI.is_dir():
        return {"skipped": "no held-out ids in the model card or ../shared/data/mri/ixi absent"}
    vtr, btr, atr, _ = cached_cohort(data["train_ids"], dae.grid, cache, dae.config.intensity_inset_mm)
    vte, bte, ate, ste = cached_cohort(data["test_ids"], dae.grid, cache, dae.config.intensity_inset_mm)
    res = {"model": str(model_dir), "training": dae.training_, "latent_prior": dae.latent_prior,
           "brain_age": brain_age(dae, (vtr, atr), (vte, ate))}
    print("brain age", res["brain_age"], flush=True)
    # 20 test scans do not resolve the comparison: add the 17 validation scans (not trained on; the centile's
    # reference only) and give the paired bootstrap interval of the MAE difference
    vva, _, ava, _ = cached_cohort(data.get("validation_ids", []), dae.grid, cache, dae.config.intensity_inset_mm)
    res["brain_age_test_and_validation"] = brain_age_paired(dae, (vtr, atr), (np.concatenate([vte, vva]),
                                                                              np.concatenate([ate, ava])), seed)
    print("brain age, test + validation scans", res["brain_age_test_and_validation"], flush=True)
    res["reconstruction"] = reconstruction(dae, vte, bte, ate, ste)
    print("reconstruction", res["reconstruction"], flush=True)
    healthy = deviation_scores(dae, vte, ate, ste)
    masks = real_lesion_masks(dae.grid, LESIONS)
    lesioned = np.stack([implant_lesion(v, masks[i % len(masks)][1] & b, dae.grid, seed=seed + i)
                         for i, (v, b) in enumerate(zip(vte, bte, strict=True))])
    patients = deviation_scores(dae, lesioned, ate, ste)
    lvte, lbte, llesioned = vte, bte, lesioned
    if ldm.config.intensity_inset_mm != dae.config.intensity_inset_mm:  # the same scans, normalised as ldm's own
        lvte, lbte, _, _ = cached_cohort(data["test_ids"], ldm.grid, cache, ldm.config.intensity_inset_mm)
        llesioned = np.stack([implant_lesion(v, masks[i % len(masks)][1] & b, ldm.grid, seed=seed + i)
                              for i, (v, b) in enumerate(zip(lvte, lbte, strict=True))])
    vox_h = voxel_indices(ldm, lvte, lbte, ate, ste, seed)
    vox_p = voxel_indices(ldm, llesioned, lbte, ate, ste, seed)
    res["healthy_heldout"] = {"centiles": [round(float(c), 3) for c in healthy["centile"]],
                              "share_above_0.95": round(float(np.mean(healthy["centile"] > 0.95)), 3),
                              "n_reference": int(np.isfinite(dae.reference_d2_).sum())}
    if "brain_age_gap" in healthy:
        res["brain_age_heldout"] = brain_age_heldout(healthy)
        print("brain age read-out, held-out healthy scans", res["brain_age_heldout"], flush=True)
    res["lesion_auc"] = aucs(healthy, patients, vox_h, vox_p)
    print("lesion AUC", res["lesion_auc"], flush=True)
    res["counterfactual_trend"] = counterfactual_trend(dae, vte, bte, ate, ste, guidances)
    res["counterfactual_trend"]["healthy_through_first_stage"] = first_stage_trend(dae, vtr, btr, atr)
    print("counterfactual trend", res["counterfactual_trend"], flush=True)
    res["time_per_scan"] = timings(dae, data["test_ids"], ate, ste)
    print("time", res["time_per_scan"], flush=True)
    return res


def synthetic_part(ae_dir: Path, seed: int, n_train: int, n_val: int, n_test: int, overrides: dict,
                   covariate_dropout: float, voxel_index: bool = True, guidances: tuple[float, ...] = (),
                   save: Path | None = None, reuse: Path | None = None, age_supervision: float = 0.0,
                   latent_prior: str = LATENT_PRIORS[0]) -> dict:
    source = ImagingNormativeModel.load(ae_dir, device="cpu")
    ldm = ImagingNormativeModel(source.config_name, seed=seed, **overrides)
    grid = ldm.grid  # the same configuration as the diffusion autoencoder's
    gen = SyntheticBrains(grid, seed)
    rng = np.random.default_rng(seed)
    ages, sexes = rng.uniform(20, 85, n_train + n_val), rng.integers(0, 2, n_train + n_val)
    vols, brains = gen.healthy(ages, sexes, seed=seed)
    tr, va = slice(0, n_train), slice(n_train, None)
    t = time.perf_counter()
    if reuse is not None:  # a synthetic diffae saved by an earlier run with the same seed and sizes
        dae = NormativeDiffusionAutoencoder.load(reuse)
        if dae.training_.get("n_train") != n_train:
            sys.exit(f"{reuse} was trained on {dae.training_.get('n_train')} synthetic scans, not {n_train}")
        dae.fit_brain_age(vols[tr], ages[tr], vols[va], ages[va])  # cheap: always the current code's read-out
    else:
        dae = NormativeDiffusionAutoencoder(source.config_name, seed=seed, covariate_dropout=covariate_dropout,
                                            age_supervision=age_supervision, latent_prior=latent_prior,
                                            **overrides)
        dae.fit(vols[tr], brains[tr], ages[tr], sexes[tr], vols[va], brains[va], ages[va], sexes[va],
                autoencoder_from=source)
        print(f"synthetic diffae trained in {time.perf_counter() - t:.0f} s", flush=True)
        if save is not None:
            dae.save(save, card_extra={"data": {"synthetic": "benchmarks/mri_diffae.py", "seed": seed,
                                                "n_train": n_train, "n_val": n_val}})
    if voxel_index:
        ldm.fit(vols[tr], brains[tr], ages[tr], sexes[tr], vols[va], brains[va], ages[va], sexes[va],
                autoencoder_from=source)
    # held-out: healthy at A in 20-65, the same brains at A + 20 (truth of the counterfactual), the same brains aged
    # 10 years more than stated (diffuse atrophy), and other brains with implanted lesions
    test_ages = rng.uniform(20, 65, n_test)
    test_sexes = rng.integers(0, 2, n_test)
    healthy_v, healthy_b = gen.healthy(test_ages, test_sexes, seed=seed + 7)
    older_v, older_b = gen.healthy(test_ages + 20, test_sexes, seed=seed + 7)
    atrophy_v, atrophy_b = gen.healthy(test_ages + 10, test_sexes, seed=seed + 7)
    bench = make_benchmark(grid, 0, n_test, seed + 100, lesion_dir=LESIONS if LESIONS.is_dir() else None)
    res = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "diffae_training": dae.training_,
           "covariate_dropout": covariate_dropout, "age_supervision": dae.age_supervision,
           "latent_prior": dae.latent_prior,
           "lesion_source": bench["lesion_source"]}
    res["brain_age"] = brain_age(dae, (vols[tr], ages[tr]), (healthy_v, test_ages))
    print("synthetic brain age", res["brain_age"], flush=True)
    h = deviation_scores(dae, healthy_v, test_ages, test_sexes)
    a = deviation_scores(dae, atrophy_v, test_ages, test_sexes)
    les = deviation_scores(dae, bench["volumes"], bench["ages"], bench["sexes"])
    if voxel_index:
        vox_h = voxel_indices(ldm, healthy_v, healthy_b, test_ages, test_sexes, seed)
        vox_a = voxel_indices(ldm, atrophy_v, atrophy_b, test_ages, test_sexes, seed)
        vox_l = voxel_indices(ldm, bench["volumes"], bench["masks"], bench["ages"], bench["sexes"], seed)
    else:  # the restoration model is the same for every variant of the diffusion autoencoder: leave it out
        vox_h, vox_a, vox_l = np.zeros(n_test), np.ones(n_test), np.ones(n_test)
    res["auc_diffuse_atrophy_10y"] = aucs(h, a, vox_h, vox_a)
    res["auc_lesions"] = aucs(h, les, vox_h, vox_l)
    if not voxel_index:
        for key in ("auc_diffuse_atrophy_10y", "auc_lesions"):
            res[key].pop("voxel_index_top1")
    res["healthy_heldout_share_above_0.95"] = round(float(np.mean(h["centile"] > 0.95)), 3)
    if "brain_age_gap" in h:
        res["brain_age_heldout"] = brain_age_heldout(h)
        res["brain_age_gap_years_mean"] = {"healthy": res["brain_age_heldout"]["gap_years_mean"],
                                           "diffuse_atrophy_10y": round(float(a["brain_age_gap"].mean()), 2),
                                           "lesions": round(float(les["brain_age_gap"].mean()), 2)}
        print("synthetic brain age read-out", res["brain_age_heldout"], res["brain_age_gap_years_mean"], flush=True)
    print("synthetic AUC", res["auc_diffuse_atrophy_10y"], res["auc_lesions"], flush=True)
    true_dv = ventricle_volume_ml(older_v, grid, healthy_b) - ventricle_volume_ml(healthy_v, grid, healthy_b)
    true_diff = older_v - healthy_v
    res["counterfactual_validity"] = {"true_ventricle_change_ml_mean": round(float(true_dv.mean()), 3)}
    for key, mode, w in cf_variants(guidances):
        cf_dv, map_r = [], []
        for i in range(n_test):
            cf = dae.counterfactual(healthy_v[i], test_ages[i], test_sexes[i], [test_ages[i] + 20], mode,
                                    age_guidance=w)
            cf_dv.append(float(ventricle_volume_ml(cf.volumes[0], grid, healthy_b[i])
                               - ventricle_volume_ml(cf.reconstruction, grid, healthy_b[i])))
            inside = healthy_b[i]
            map_r.append(float(np.corrcoef(cf.differences()[0][inside], true_diff[i][inside])[0, 1]))
        cf_dv = np.array(cf_dv)
        res["counterfactual_validity"][key] = {
            "ventricle_change_ml_mean": round(float(cf_dv.mean()), 3),
            "ventricle_change_r": round(float(np.corrcoef(cf_dv, true_dv)[0, 1]), 3),
            "difference_map_r_mean": round(float(np.mean(map_r)), 3)}
    print("counterfactual validity", res["counterfactual_validity"], flush=True)
    return res


def update_card(model_dir: Path, ixi: dict) -> None:
    """Write the held-out IXI metrics into the model card (JSON only; the weights are untouched)."""
    store_card_metrics(model_dir, {"benchmark": "benchmarks/mri_diffae.py --parts ixi (held-out IXI scans)",
                                   **{k: ixi[k] for k in ("brain_age", "brain_age_test_and_validation",
                                                          "reconstruction", "healthy_heldout", "brain_age_heldout",
                                                          "lesion_auc", "counterfactual_trend", "time_per_scan")
                                      if k in ixi}})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "mri-ixi-diffae-cpu"))
    ap.add_argument("--ldm", default=str(ROOT / "models" / "mri-ixi-cpu"),
                    help="the restoration model (voxel index) and, for the synthetic part, the first stage")
    ap.add_argument("--parts", default="ixi,synthetic")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic-n", default="100,20,20", help="train, validation, test (per group) sizes")
    ap.add_argument("--synthetic-overrides", default="{}", help="JSON config overrides for the synthetic models")
    ap.add_argument("--covariate-dropout", type=float, default=0.5,
                    help="of the synthetic part's diffusion autoencoder")
    ap.add_argument("--age-supervision", type=float, default=0.0,
                    help="weight of the semantic vector's age read-out loss for the synthetic model (0: none)")
    ap.add_argument("--latent-prior", default=LATENT_PRIORS[0], choices=LATENT_PRIORS,
                    help="the synthetic model's latent prior (the IXI part reads it from the model's card)")
    ap.add_argument("--no-voxel-index", action="store_true",
                    help="synthetic part: leave out the restoration model (the same for every diffae variant)")
    ap.add_argument("--parts-key", default="",
                    help="suffix of the result keys (e.g. to keep two variants side by side)")
    ap.add_argument("--cache", default=None, help="folder for preprocessed IXI volumes (reused between runs)")
    ap.add_argument("--guidance", default="1", help="age-guidance scales (mode both), e.g. 1,3,6")
    ap.add_argument("--save-synthetic", default=None, help="save the synthetic part's diffusion autoencoder here")
    ap.add_argument("--synthetic-from", default=None,
                    help="reuse a diffusion autoencoder saved by --save-synthetic (its brain-age read-out is refitted)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mri_diffae.json"))
    ap.add_argument("--update-card", action="store_true", help="store the IXI results in the model card's metrics")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import SimpleITK as sitk  # registration threads too (two parts may run side by side, one core each)

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    out_path = Path(args.out)
    result: dict = {}
    result.update(machine=f"{platform.machine()}, {args.threads} torch threads, "
                          f"{'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
                  torch=torch.__version__)
    parts = args.parts.split(",")
    cache = Path(args.cache) if args.cache else None
    guidances = tuple(float(w) for w in args.guidance.split(","))
    if "ixi" in parts:
        start = time.perf_counter()
        result["ixi" + args.parts_key] = ixi = ixi_part(Path(args.model), Path(args.ldm), args.seed, cache,
                                                        guidances)
        ixi["wall_s"] = round(time.perf_counter() - start)
        if args.update_card and "brain_age" in ixi:
            update_card(Path(args.model), ixi)
    if "synthetic" in parts:
        start = time.perf_counter()
        n_train, n_val, n_test = (int(x) for x in args.synthetic_n.split(","))
        result["synthetic" + args.parts_key] = synthetic_part(Path(args.ldm), args.seed, n_train, n_val, n_test,
                                             json.loads(args.synthetic_overrides), args.covariate_dropout,
                                             not args.no_voxel_index, guidances,
                                             Path(args.save_synthetic) if args.save_synthetic else None,
                                             Path(args.synthetic_from) if args.synthetic_from else None,
                                             args.age_supervision, args.latent_prior)
        result["synthetic" + args.parts_key]["wall_s"] = round(time.perf_counter() - start)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    latest = json.loads(out_path.read_text()) if out_path.is_file() else {}  # parts run meanwhile are kept
    result = {**latest, **result}
    tmp = out_path.with_suffix(f".{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

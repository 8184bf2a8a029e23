"""``python -m normcore mri-fit`` and ``mri-score``: the imaging half of the command line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from normcore._utils.errors import InputError
from normcore._utils.plausibility import AGE_LIMITS
from normcore._utils.progress import Progress
from normcore.cli.arguments import SEED, check_output_file, float_between, int_at_least, json_object
from normcore.imaging.anomaly import INDEX_LABELS
from normcore.imaging.config import PRESETS
from normcore.imaging.diffae import COVARIATE_DROPOUT, LATENT_PRIORS, MAX_AGE_SUPERVISION
from normcore.imaging.resampling import MAX_RESAMPLINGS


def cmd_mri_fit(args: argparse.Namespace, progress: Progress) -> None:
    from normcore.imaging.acquisition import envelope
    from normcore.imaging.cohort import load_cohort, split_indices
    from normcore.imaging.diffae import NormativeDiffusionAutoencoder
    from normcore.imaging.model import ImagingNormativeModel
    from normcore.persistence import check_model_destination
    from normcore.registry import load_model

    start = time.perf_counter()
    check_model_destination(args.out, "--out")
    if args.cross_fit and args.method != "ldm":
        raise InputError("--cross-fit applies to the restoration model (--method ldm) only")
    if args.age_supervision and args.method != "diffae":
        raise InputError("--age-supervision applies to the diffusion autoencoder (--method diffae) only")
    if args.latent_prior is not None and args.method != "diffae":
        raise InputError("--latent-prior applies to the diffusion autoencoder (--method diffae) only")
    overrides = json_object(args.config_overrides, "--config-overrides")
    if args.method == "diffae":
        model = NormativeDiffusionAutoencoder(args.config, semantic_dim=args.semantic_dim, seed=args.seed,
                                              device=args.device or "auto",
                                              covariate_dropout=args.covariate_dropout,
                                              age_supervision=args.age_supervision,
                                              latent_prior=args.latent_prior or LATENT_PRIORS[0], **overrides)
    else:
        model = ImagingNormativeModel(args.config, seed=args.seed, device=args.device or "auto", **overrides)
    cohort = load_cohort(args.images, args.participants, model.grid, masks=args.masks, progress=progress,
                         intensity_inset_mm=model.config.intensity_inset_mm)
    prep_s = time.perf_counter() - start
    tr, va, te = split_indices(len(cohort.ids), args.validation, args.holdout, args.seed)
    train, val = cohort.subset(tr), cohort.subset(va)
    reuse = load_model(args.autoencoder_from, device="cpu", kind=("imaging", "diffae")) if args.autoencoder_from \
        else None
    if reuse is not None:
        reuse.ae_.to(model.device)
    model.fit(train.volumes, train.brains, train.ages, train.sexes, val.volumes, val.brains, val.ages, val.sexes,
              progress=progress, autoencoder_from=reuse)
    if args.cross_fit:
        from normcore.imaging.crossfit import use_cross_fitted_reference

        healthy = cohort.subset(np.r_[tr, va])
        use_cross_fitted_reference(model, healthy.volumes, healthy.brains, healthy.ages, healthy.sexes,
                                   ids=healthy.ids, folds=args.cross_fit, progress=progress)
    card = {"data": {"images": str(args.images), "participants": str(args.participants),
                     "masks": str(args.masks) if args.masks else None, "n_scans": len(cohort.ids),
                     "train_ids": train.ids, "validation_ids": val.ids, "test_ids": [cohort.ids[i] for i in te],
                     "preprocessing_s": round(prep_s, 1), "warnings": cohort.warnings[:50],
                     "autoencoder_from": str(args.autoencoder_from) if args.autoencoder_from else None},
            "attribution": args.attribution, "configs_available": sorted(PRESETS),
            "acquisition": envelope(train.facts)}
    model.save(args.out, card_extra=card)
    trained = (f"trained on {len(train.ids)} scans ({len(val.ids)} validation, {len(te)} held out) in "
               f"{time.perf_counter() - start:.0f} s")
    if args.method == "diffae":
        print(f"{trained}; diffusion autoencoder with a {model.semantic_dim}-dimensional semantic latent -> {args.out}")
    else:
        headline = model.config.headline_index
        ref = model.reference_["kl-inpaint"][headline]
        print(f"{trained}; healthy index ({INDEX_LABELS[headline]}) median {np.median(ref):.2f} over {len(ref)} "
              f"{model.reference_info_['scheme']} reference scans -> {args.out}")


def cmd_mri_score(args: argparse.Namespace, progress: Progress) -> None:
    from normcore.imaging.pipeline import export_maps, score_scan
    from normcore.registry import load_model

    if args.report:
        if Path(args.report).suffix.lower() not in (".html", ".pdf"):
            raise InputError(f"--report {args.report}: name a .html or .pdf file")
        check_output_file(args.report, "--report", inputs=(args.scan,))
    model = load_model(args.model, device=args.device or "auto", kind="imaging")
    result = score_scan(model, args.scan, args.age, args.sex, mask=args.mask, name=str(args.scan),
                        register=not args.no_register, method=args.method, seed=args.seed, progress=progress,
                        resamplings=args.resamplings)
    export_maps(result, args.out)
    score = result.score
    print(f"abnormality index ({score.headline_label}) {score.index[score.headline]:.2f}, centile "
          f"{score.centile[score.headline]:.0f} among {score.reference_text()}; maps -> {args.out} "
          f"({result.seconds:.1f} s)")
    if result.band is not None:
        print(f"{result.band.text()} (result.json: healthy_centile_band)")
    if result.brain_age is not None:
        print(f"{result.brain_age.text()} (result.json: brain_age)")
    for w in result.warnings:
        print(f"warning: {w}")
    if not result.index_reliable:
        failed = ", ".join(g["gate"] for g in result.quality if not g["passed"])
        print(f"warning: index unreliable: the scan fails the quality gate(s) {failed} (result.json: quality)")
    if args.report:
        from normcore.reports import write_html, write_pdf
        from normcore.reports.mri import findings_from_result
        from normcore.reports.subject import mri_subject_report

        report = mri_subject_report(findings_from_result(result), result.age, result.sex, Path(args.model).name,
                                    model.card_.get("training", {}).get("n_train"), model.age_range_)
        (write_pdf if Path(args.report).suffix.lower() == ".pdf" else write_html)(report, args.report)
        print(f"report -> {args.report}")


def cmd_mri_latent(args: argparse.Namespace, progress: Progress) -> None:
    from normcore.imaging.diffae import check_guidance
    from normcore.imaging.latent_pipeline import analyse_scan, export_latent, parse_ages
    from normcore.registry import load_model

    ages = parse_ages(args.at_ages)  # refused before the model loads
    if args.age_guidance is not None:
        check_guidance(args.age_guidance)
    model = load_model(args.model, device=args.device or "auto", kind="diffae")
    result = analyse_scan(model, args.scan, args.age, args.sex, mask=args.mask, name=str(args.scan),
                          register=not args.no_register, at_ages=ages, mode=args.mode, progress=progress,
                          age_guidance=args.age_guidance)
    export_latent(result, args.out)
    d = result.deviation
    print(f"whole-brain latent deviation: centile {d.centile:.2f} among {d.n_reference} healthy validation scans, "
          f"multivariate z {d.multivariate_z:.2f}, cosine similarity {d.cosine_similarity:.3f}; "
          f"{len(ages)} counterfactual(s); latent.json -> {args.out} ({result.seconds:.1f} s)")
    evidence = model.evidence_text()
    if evidence:
        print(evidence)
    if result.brain_age is not None:
        print(f"{result.brain_age.text()} (latent.json: brain_age)")
    for w in result.warnings:
        print(f"warning: {w}")
    if not result.reliable:
        failed = ", ".join(g["gate"] for g in result.scan.quality if not g["passed"])
        print(f"warning: scores unreliable: the scan fails the quality gate(s) {failed} (latent.json: quality)")


def cmd_mri_cohort(args: argparse.Namespace, progress: Progress) -> None:
    from normcore._utils.distributed import is_main_process
    from normcore.imaging.cohort_scores import score_cohort
    from normcore.registry import load_model
    from normcore.tabular.io import write_table_atomic

    check_output_file(args.out, inputs=(args.participants,))
    model = load_model(args.model, device=args.device or "auto", kind="imaging")
    start = time.perf_counter()
    table = score_cohort(model, args.images, args.participants, masks=args.masks, method=args.method,
                         seed=args.seed, register=not args.no_register, maps_dir=args.maps, progress=progress,
                         resamplings=args.resamplings)
    if not is_main_process():
        return
    write_table_atomic(table, args.out)
    scored = table[table.error == ""]
    unreliable = int((scored.index_reliable == False).sum())  # noqa: E712 (a column of booleans and NaN)
    headline = INDEX_LABELS[model.config.headline_index]
    summary = (f": median abnormality index ({headline}) {scored.abnormality_index.median():.2f}, "
               f"{int((scored.healthy_centile > 95).sum())} above the 95th healthy centile, {unreliable} labelled "
               "unreliable" if len(scored) else " (see the warnings below and the table's error column)")
    print(f"scored {len(scored)} of {len(table)} scans in {time.perf_counter() - start:.0f} s{summary} -> {args.out}")
    for row in table[table.error != ""].itertuples():
        print(f"warning: {row.subject_id}: not scored: {row.error}")


def add_parsers(sub, common) -> None:
    """Register the imaging subcommands on the main parser's subparsers."""
    f = sub.add_parser("mri-fit", help="train the imaging model on healthy T1 scans")
    f.add_argument("--images", required=True, help="folder of NIfTI scans, names starting with the subject id")
    f.add_argument("--participants", required=True, help="CSV with subject id, age, sex")
    f.add_argument("--masks", default=None, help="folder of brain masks or label maps (nonzero = brain), same naming")
    f.add_argument("--out", required=True)
    f.add_argument("--config", default="cpu", choices=sorted(PRESETS), help="model size (tiny: tests only)")
    f.add_argument("--config-overrides", default=None, metavar="JSON", help='e.g. \'{"dit_steps": 500}\' (advanced)')
    f.add_argument("--validation", type=float_between(0, 1, lo_open=True, hi_open=True), default=0.15,
                   help="share of scans for the healthy calibration set")
    f.add_argument("--holdout", type=int_at_least(0), default=0,
                   help="scans held out for testing (ids listed in the card)")
    f.add_argument("--attribution", default=None, help="data attribution text stored in the model card")
    f.add_argument("--autoencoder-from", default=None, metavar="MODEL_DIR",
                   help="reuse the first stage (autoencoder) of a fitted model of the same configuration and train "
                        "only the latent diffusion model")
    f.add_argument("--method", default="ldm", choices=["ldm", "diffae"],
                   help="ldm: the restoration model for mri-score (default); diffae: the normative diffusion "
                        "autoencoder for mri-latent (semantic latent, whole-brain deviation, counterfactual age)")
    f.add_argument("--semantic-dim", type=int_at_least(2), default=32,
                   help="length of the diffusion autoencoder's semantic vector (--method diffae)")
    f.add_argument("--covariate-dropout", type=float_between(0, 1, hi_open=True), default=COVARIATE_DROPOUT,
                   help="share of training scans whose age and sex the denoiser is not given, so that the semantic "
                        "vector carries their effects (--method diffae)")
    f.add_argument("--age-supervision", type=float_between(0, MAX_AGE_SUPERVISION), default=0.0, metavar="W",
                   help="train a read-out of age from the semantic vector beside the denoiser, with weight W on its "
                        "squared error, so the vector carries age explicitly (--method diffae; 0: none, the default)")
    f.add_argument("--latent-prior", default=None, choices=LATENT_PRIORS,
                   help="Gaussian prior under the latent denoiser (--method diffae): age-trend (default) moves its "
                        "mean with age and sex, so generation and counterfactual ageing follow the healthy trend; "
                        "constant: one mean for all ages (models before this option)")
    f.add_argument("--cross-fit", type=int_at_least(0), default=0, metavar="K",
                   help="base the voxel z statistics and the index's healthy reference on every training and "
                        "validation scan, each restored by one of K extra denoisers trained without its fold "
                        "(K more latent-diffusion trainings; 5 is a good choice; 0: the validation scans only)")
    f.add_argument("--seed", type=SEED, default=0)
    common(f)
    f.set_defaults(func=cmd_mri_fit, wants_progress=True)

    s = sub.add_parser("mri-score", help="pseudo-healthy restoration, anomaly map and abnormality index of a scan")
    s.add_argument("model")
    s.add_argument("scan")
    s.add_argument("--age", type=float_between(*AGE_LIMITS), required=True, help="years")
    s.add_argument("--sex", required=True, help="M or F (or the model's coding: 1 = male, 0 = female)")
    s.add_argument("--mask", default=None, help="brain mask or label map (nonzero = brain) on the scan's grid")
    s.add_argument("--method", default="kl-inpaint", choices=["kl-inpaint", "plain", "autoencoder"])
    s.add_argument("--no-register", action="store_true", help="the scan is already in MNI space")
    s.add_argument("--seed", type=SEED, default=None)
    s.add_argument("--resamplings", type=int_at_least(0, MAX_RESAMPLINGS), default=0, metavar="K",
                   help="also reslice the scan K times by a random fraction of a voxel, prepare and score each "
                        "version, and report the range of the centile (how far sampling alone moves it for this "
                        "scan; about 2 s more per version on a CPU; 0: off)")
    s.add_argument("--out", required=True)
    s.add_argument("--report", default=None, metavar="FILE",
                   help="also write a report of the scan (index, centile, quality, slices): report.html or report.pdf")
    common(s)
    s.set_defaults(func=cmd_mri_score, wants_progress=True)

    co = sub.add_parser("mri-cohort", help="score every scan of a folder into one table (mri-score per scan; "
                                           "shares the scans across torchrun processes)")
    co.add_argument("model")
    co.add_argument("--images", required=True, help="folder of NIfTI scans, names starting with the subject id")
    co.add_argument("--participants", required=True, help="CSV with subject id, age, sex")
    co.add_argument("--masks", default=None, help="folder of brain masks or label maps (nonzero = brain), same naming")
    co.add_argument("--method", default="kl-inpaint", choices=["kl-inpaint", "plain", "autoencoder"])
    co.add_argument("--no-register", action="store_true", help="the scans are already in MNI space")
    co.add_argument("--seed", type=SEED, default=0, help="each scan's seed (as mri-score --seed)")
    co.add_argument("--resamplings", type=int_at_least(0, MAX_RESAMPLINGS), default=0, metavar="K",
                    help="each scan's centile band over K resliced versions (as mri-score --resamplings; columns "
                         "healthy_centile_band_low/high)")
    co.add_argument("--maps", default=None, metavar="DIR",
                    help="also write each scan's maps and result.json into DIR/<subject id>/ (as mri-score --out)")
    co.add_argument("--out", required=True, help="the table (CSV), one row per participant")
    common(co)
    co.set_defaults(func=cmd_mri_cohort, wants_progress=True)

    lat = sub.add_parser("mri-latent", help="whole-brain latent deviation, brain age and counterfactual ageing of a "
                                            "scan (a diffusion autoencoder from mri-fit --method diffae)")
    lat.add_argument("model")
    lat.add_argument("scan")
    lat.add_argument("--age", type=float_between(*AGE_LIMITS), required=True, help="years")
    lat.add_argument("--sex", required=True, help="M or F (or the model's coding: 1 = male, 0 = female)")
    lat.add_argument("--mask", default=None, help="brain mask or label map (nonzero = brain) on the scan's grid")
    lat.add_argument("--at-ages", default=None, metavar="A,B,...",
                     help="counterfactual ages, e.g. 40,60,80: writes counterfactual_age-<A>.nii.gz (and its "
                          "_difference from the reconstruction at the scan's own age) for each")
    lat.add_argument("--mode", default="both", choices=["both", "condition", "semantic"],
                     help="how the age changes: the age condition and the semantic vector along the healthy age "
                          "trend (both), or only one of them")
    lat.add_argument("--age-guidance", type=float, default=None, metavar="W",
                     help="amplify the change of age at each decoding step by W (1 to 20; 1: none; default: the "
                          "model's); the scan's own age is reproduced exactly at any W")
    lat.add_argument("--no-register", action="store_true", help="the scan is already in MNI space")
    lat.add_argument("--out", required=True)
    common(lat)
    lat.set_defaults(func=cmd_mri_latent, wants_progress=True)

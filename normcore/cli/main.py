"""Command line: ``python -m normcore COMMAND ...`` (fit, score, centiles, sample, adapt, change, report, evaluate,
synth, mri-fit, mri-score, mri-latent).

A stable public contract: commands, flags and output columns are extended, never renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from normcore._utils.atomic import write_text_atomic
from normcore._utils.distributed import init_distributed_from_env, is_main_process, launched_distributed
from normcore._utils.errors import InputError, column_not_found
from normcore._utils.progress import Cancelled, Progress
from normcore._utils.threads import adapt_threads, fix_threads
from normcore.cli.arguments import (
    COUNT,
    SEED,
    age_grid,
    check_output_file,
    csv_list,
    float_between,
    float_list,
    int_at_least,
    json_object,
    parse_sets,
)
from normcore.diffusion.noise import SAMPLING_NOISE
from normcore.persistence import check_writable_parent
from normcore.registry import DIFFUSION, SAVABLE
from normcore.tabular.column_matching import match_columns
from normcore.tabular.fit_notes import kept_denoiser, model_notes
from normcore.tabular.io import read_table, write_table_atomic
from normcore.tabular.params import MIN_TIMESTEPS
from normcore.tabular.scoring import TAIL_SCALES

DISTRIBUTED_COMMANDS = ("fit", "score", "centiles", "evaluate", "mri-cohort")
"""Commands that share their work across the processes of ``torchrun --nproc_per_node N -m normcore ...``
(fit: data-parallel training; mri-cohort: scans; the others: covariate points, see
:mod:`normcore._utils.distributed`); only rank 0 writes the output, which equals a one-process run's with the same
seed."""


def _stderr_progress(quiet: bool) -> Progress:
    last = [0.0]

    def report(stage: str, done: int, total: int, **info) -> None:
        now = time.perf_counter()
        if quiet or (now - last[0] < 1.0 and done < total):
            return
        last[0] = now
        extra = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        print(f"[{stage}] {done}/{total} {extra}", file=sys.stderr, flush=True)

    return Progress(callback=report)


def _read(path: str):
    """Read a table, telling the user on stderr what was recognised on the way (e.g. decimal commas)."""
    df = read_table(path)
    for note in df.attrs.get("read_notes", []):
        print(f"note: {path}: {note}", file=sys.stderr)
    return df


def _print_notes(frame) -> None:
    for note in frame.attrs.get("notes", []):
        print(f"note: {note}", file=sys.stderr)


def _load_model(path: str, device: str | None):
    from normcore.registry import load_model

    model = load_model(path, device=device, kind="tabular")
    for note in getattr(model, "load_notes_", []):
        print(f"note: {path}: {note}", file=sys.stderr)
    return model


SAMPLING_OPTIONS = {"sampling_noise": "--sampling-noise", "tail_scale": "--tail-scale",
                    "score_age_resolution": "--age-resolution"}
"""Model parameters of how scores are estimated from samples, and the flags that override them per run."""


def _use_sampling_options(model, args: argparse.Namespace) -> None:
    """Apply the ``SAMPLING_OPTIONS`` flags the command has to a loaded model (None: the model's own setting)."""
    for param, flag in SAMPLING_OPTIONS.items():
        value = getattr(args, param, None)
        if value is None:
            continue
        if param not in model.get_params():
            raise InputError(f"{flag}: a {model.model_type} model estimates without samples")
        model.set_params(**{param: value})


def cmd_fit(args: argparse.Namespace) -> None:
    from normcore.persistence import check_model_destination
    from normcore.registry import make_model

    check_model_destination(args.out, "--out")  # before training, so that no training is lost
    df = _read(args.data)
    if args.idps and args.idps_regex:
        raise InputError("use either --idps or --idps-regex, not both")
    covariates = csv_list(args.covariates)
    df = _rows_of_group(df, args.data, args.group_col, args.control_value)
    exclude = [c for c in (args.id_col, args.group_col) if c]
    idps, id_columns = csv_list(args.idps) or None, []
    if idps is None and not args.idps_regex:
        from normcore.tabular.validation import default_idps

        idps, id_columns = default_idps(df, exclude=[args.age, *covariates, *exclude], label=str(args.data))
    if args.id_col:
        _warn_duplicate_ids(df, args.id_col, args.data)
    backbone_params = json_object(args.backbone_params, "--backbone-params")
    extra = {"sampling_steps": args.sampling_steps} if args.sampling_steps else {}
    extra.update({p: getattr(args, p) for p in SAMPLING_OPTIONS if getattr(args, p, None) is not None})
    batch = csv_list(args.batch_covariates)
    if batch:
        if args.backbone not in DIFFUSION:
            raise InputError(f"--batch-covariates applies to the diffusion backbones ({', '.join(DIFFUSION)}), "
                             f"not {args.backbone}")
        outside = [c for c in batch if c not in covariates]
        if outside:
            raise InputError(f"--batch-covariates {outside} must also be named in --covariates ({covariates})")
        extra["batch_covariates"] = batch
    model = make_model(args.backbone, epochs=args.epochs, seed=args.seed, device=args.device,
                       transform=args.transform, n_samples=args.samples, timesteps=args.timesteps,
                       batch_size=args.batch_size, backbone_params=backbone_params, **extra)
    model.check_params()
    model.fit(df, age=args.age, covariates=covariates, idps=idps, idps_regex=args.idps_regex,
              progress=_stderr_progress(args.quiet), label=str(args.data))
    for warning in [*id_columns, *model.fit_warnings_]:
        print(f"warning: {warning}", file=sys.stderr)
    model.save(args.out)
    h = model.history_
    rows = f"{model.training_summary_['n_train']} train / {model.training_summary_['n_validation']} validation rows"
    kept = kept_denoiser(model)
    if "steps" in h:
        print(f"fitted {args.backbone} on {h.get('world_size', 1)} process(es): {len(model.idps)} IDPs, {rows}, "
              f"{h['steps']} step{'s' * (h['steps'] != 1)} in {h['fit_time_s']:.1f} s, "
              f"best validation loss {h['best_val_loss']:.4f}"
              + (f" ({kept})" if kept else "") + f"; saved to {args.out}")
    else:
        print(f"fitted {args.backbone}: {len(model.idps)} IDPs, {rows}, {h['fit_time_s']:.1f} s; saved to {args.out}")
    for note in model_notes(model):
        print(note)


def _warn_duplicate_ids(df, id_col: str, data: str) -> None:
    if id_col not in df.columns:
        raise column_not_found(data, "--id-col", id_col, df.columns)
    dup = df[id_col][df[id_col].duplicated()].astype(str).unique().tolist()
    if dup:
        print(f"warning: {data}: {len(dup)} duplicate subject ID(s) in {id_col!r} (e.g. {dup[0]!r})", file=sys.stderr)


def cmd_score(args: argparse.Namespace) -> None:
    pcn = args.format == "pcntoolkit"
    if pcn:  # --out names a folder for PCNtoolkit's three tables
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise InputError(f"--out {args.out}: is a file; with --format pcntoolkit it names a folder for the tables")
        check_writable_parent(Path(args.out) / "Z.csv", "--out")
    else:
        check_output_file(args.out, inputs=(args.data,))
    model = _load_model(args.model, args.device)
    model.allow_unseen = args.allow_unseen or model.allow_unseen
    _use_sampling_options(model, args)
    df = _read(args.data)
    if args.id_col:
        _warn_duplicate_ids(df, args.id_col, args.data)
    out = model.score(df, n_samples=args.samples, seed=args.seed, progress=_stderr_progress(args.quiet),
                      label=str(args.data))
    if pcn:
        from normcore.tabular.pcntoolkit_export import pcntoolkit_tables, write_pcntoolkit_results

        tables = pcntoolkit_tables(model, df, out, id_col=args.id_col, n_samples=args.samples, seed=args.seed)
    if not is_main_process():
        return
    _print_notes(out)
    if pcn:
        paths = write_pcntoolkit_results(tables, args.out, args.pcn_name)
        print(f"scored {len(df)} subjects in PCNtoolkit's layout -> {', '.join(str(p) for p in paths)}")
        return
    write_table_atomic(out, args.out)
    n_out = int(out["out_of_range"].sum())
    note = f"; {n_out} subject(s) outside the training age range (flagged in out_of_range)" if n_out else ""
    present = sum(c in df.columns for c in model.idps)
    if present < len(model.idps):
        absent = [c for c in model.idps if c not in df.columns]
        found = match_columns([c for c in map(str, df.columns) if c not in model.idps], absent)
        respelled = (f"; {len(found)} of them are in it spelled otherwise, e.g. "
                     f"{', '.join(f'{found[c]!r} for {c!r}' for c in list(found)[:2])}: rename to score them"
                     if found else "")
        note += (f"; {len(absent)} of the model's {len(model.idps)} IDPs are not in the table "
                 f"(no z/centile columns for them; the multivariate score uses the ones present{respelled})")
    print(f"scored {len(out)} subjects on {present} IDPs -> {args.out}{note}")


def cmd_centiles(args: argparse.Namespace) -> None:
    check_output_file(args.out)
    model = _load_model(args.model, args.device)
    _use_sampling_options(model, args)
    fixed = parse_sets(args.set)
    ages = age_grid(args.ages)
    quantiles = float_list(args.quantiles, "--quantiles")
    out = model.centiles(ages, tuple(quantiles), fixed=fixed, n_samples=args.samples, seed=args.seed,
                         progress=_stderr_progress(args.quiet))
    if not is_main_process():
        return
    write_table_atomic(out, args.out)
    free = [c for c in model.covariates_ if c not in fixed]
    note = f" ({', '.join(free)} marginalised over the training distribution)" if free else ""
    lo, hi = model.age_range_
    outside = int(model.encoder_.out_of_range(np.asarray(ages, float)).sum())
    if outside:
        note += f"; {outside} of the ages lie outside the training age range {lo:g}-{hi:g} (extrapolated)"
    print(f"wrote {len(out)} centile rows for {len(model.idps)} IDPs at {len(ages)} ages -> {args.out}{note}")


def cmd_sample(args: argparse.Namespace) -> None:
    check_output_file(args.out, inputs=(args.covariates,))
    model = _load_model(args.model, args.device)
    model.allow_unseen = args.allow_unseen or model.allow_unseen
    cov = _read(args.covariates)
    if args.n < 1:
        raise InputError("--n must be at least 1")
    out = model.sample(cov, n=args.n, seed=args.seed, progress=_stderr_progress(args.quiet),
                       label=str(args.covariates))
    write_table_atomic(out, args.out)
    lo, hi = model.age_range_
    outside = int(model.encoder_.out_of_range(out[model.age_].to_numpy(float)).sum()) // args.n
    note = f"; {outside} row(s) aged outside the training age range {lo:g}-{hi:g} (extrapolated)" if outside else ""
    print(f"wrote {len(out)} samples ({args.n} per covariate row) -> {args.out}{note}")


def _rows_of_group(df, data: str, group_col: str | None, value: str):
    """The rows whose ``group_col`` equals ``value`` (all rows without a group column)."""
    if not group_col:
        return df
    if group_col not in df.columns:
        raise column_not_found(data, "--group-col", group_col, df.columns)
    keep = df[group_col].astype(str) == str(value)
    if not keep.any():
        held = sorted(df[group_col].dropna().astype(str).unique())
        raise InputError(f"{data}: no rows with {group_col} == {value!r} (it holds {held[:6]}"
                         f"{' and more' if len(held) > 6 else ''}); name the controls' value with --control-value")
    return df[keep].reset_index(drop=True)


def cmd_adapt(args: argparse.Namespace) -> None:
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise InputError("--out must differ from the reference model folder (the reference is never changed)")
    from normcore.persistence import check_model_destination

    check_model_destination(args.out, "--out")
    model = _load_model(args.model, args.device)
    df = _rows_of_group(_read(args.data), args.data, args.group_col, args.control_value)
    adapted = model.adapt(df, refine=csv_list(args.refine), progress=_stderr_progress(args.quiet),
                          label=str(args.data), network_input=args.network_input)
    for warning in adapted.adapt_warnings_:
        print(f"warning: {warning}", file=sys.stderr)
    adapted.save(args.out)
    record = adapted.adaptation_[-1]
    for lv in record["levels"]:
        kind = "new level" if lv["new_level"] else "refined level"
        print(f"{lv['covariate']}={lv['level']} ({kind}): {lv['n_controls']} controls aged "
              f"{lv['age_range'][0]:g}-{lv['age_range'][1]:g}, {lv['idps_adapted']} of {record['idps']} IDPs; "
              f"weight of the local estimate {lv['mean_weight_location']:.2f} (location), "
              f"{lv['mean_weight_scale']:.2f} (scale)")
    print(f"adapted model -> {args.out}")


def cmd_change(args: argparse.Namespace) -> None:
    from normcore.tabular.longitudinal import change_scores

    check_output_file(args.out, inputs=(args.data,))
    rho = None
    if args.rho is not None:
        try:
            rho = float(args.rho)
        except ValueError:
            rho = json_object(args.rho, "--rho")
    model = _load_model(args.model, args.device)
    model.allow_unseen = args.allow_unseen or model.allow_unseen
    _use_sampling_options(model, args)
    df = _read(args.data)
    result = change_scores(model, df, args.id_col, args.visit_col, group_col=args.group_col,
                           control_value=args.control_value, rho=rho, n_samples=args.samples, seed=args.seed,
                           progress=_stderr_progress(args.quiet), label=str(args.data))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    write_table_atomic(result.table, args.out)
    rho_values = np.array(list(result.rho.values()))
    flagged = int((result.table["n_significant_change"] > 0).sum())
    print(f"{len(result.table)} pairs of consecutive visits of {result.table[args.id_col].nunique()} subjects -> "
          f"{args.out}; visit-to-visit correlation {result.rho_source} (median {np.median(rho_values):.2f}, "
          f"range {rho_values.min():.2f}-{rho_values.max():.2f}); {flagged} pair(s) with a significant change "
          "(|zchange| > 1.96) in at least one IDP")


def cmd_report(args: argparse.Namespace) -> None:
    from normcore._utils.atomic import write_atomic
    from normcore.reports import cohort_report, render_cohort, subject_report, write_html, write_pdf

    suffix = Path(args.out).suffix.lower()
    if suffix not in (".html", ".pdf"):
        raise InputError(f"--out {args.out}: name a .html or .pdf file")
    if bool(args.cohort) == bool(args.subject):
        raise InputError("give either --subject ID (a subject report) or --cohort (a cohort report)")
    if args.cohort and not args.group_col:
        raise InputError("--cohort needs --group-col (and --control-value) to tell patients from controls")
    if (args.mri or args.mri_scan) and args.cohort:
        raise InputError("--mri belongs to a subject report (--subject), not to --cohort")
    if args.mri_scan and not args.mri:
        raise InputError("--mri-scan needs --mri RESULT_DIR (the subject's mri-score output folder)")
    check_output_file(args.out, inputs=(args.scores,))
    model = _load_model(args.model, args.device)
    scores = _read(args.scores)
    if args.cohort:
        report = cohort_report(model, scores, args.group_col, args.control_value, id_col=args.id_col)
        html_text, pdf = render_cohort(report)
        strongest = report.per_idp.reindex(report.per_idp.cohen_d.abs().sort_values(ascending=False).index).iloc[0]
        what = (f"cohort report ({report.header['Cohort']}; strongest separation {strongest.idp}, Cohen's d "
                f"{strongest.cohen_d:+.2f})")
    else:
        mri = None
        if args.mri:
            from normcore.reports.mri import findings_from_folder

            mri = findings_from_folder(args.mri, args.mri_scan)
        report = subject_report(model, scores, args.subject, id_col=args.id_col, n_samples=args.samples,
                                seed=args.seed, mri=mri)
        (write_pdf if suffix == ".pdf" else write_html)(report, args.out)  # draws only the format asked for
        print(f"report of {report.subject} ({report.multivariate['n_idps']} IDPs; most deviant "
              f"{report.top.idp.iloc[0]} at centile {100 * report.top.centile.iloc[0]:.1f}) -> {args.out}")
        return
    if suffix == ".pdf":
        write_atomic(args.out, lambda tmp: tmp.write_bytes(pdf))
    else:
        write_atomic(args.out, lambda tmp: tmp.write_text(html_text, encoding="utf-8"))
    print(f"{what} -> {args.out}")


def cmd_synth(args: argparse.Namespace) -> None:
    from normcore.tabular.synthetic import SyntheticTruth

    if args.n < 1 or args.patients < 0:
        raise InputError("--n must be >= 1 and --patients >= 0")
    try:
        truth = SyntheticTruth.create(d=args.d, n_sites=args.sites, seed=args.seed)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    df = truth.sample(args.n, seed=args.seed + 1, patients=args.patients, patient_shift=args.patient_shift)
    write_table_atomic(df, args.out)
    truth_path = Path(args.out).with_suffix(".truth.json")
    truth.save(truth_path)
    print(f"wrote {args.n} controls and {args.patients} patients with {args.d} IDPs -> {args.out}; "
          f"exact truth -> {truth_path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from normcore.tabular.evaluation import evaluate, summary_lines
    from normcore.tabular.synthetic import SyntheticTruth

    model = _load_model(args.model, args.device)
    _use_sampling_options(model, args)
    holdout = _read(args.data)
    truth = None
    if args.truth:
        path = Path(args.data).with_suffix(".truth.json") if args.truth == "synthetic" else Path(args.truth)
        if not path.is_file():
            raise InputError(f"--truth: {path} not found (written by `normcore synth` beside the data)")
        try:
            truth = SyntheticTruth.load(path)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise InputError(f"--truth {path}: not a synthetic truth file ({exc})") from None
    if args.group_col and args.group_col not in holdout.columns:
        raise column_not_found(args.data, "--group-col", args.group_col, holdout.columns)
    train = _read(args.train) if args.train else None
    report = evaluate(model, holdout, truth=truth, group_col=args.group_col, control_value=args.control_value,
                      train=train, n_samples=args.samples, seed=args.seed)
    if not is_main_process():
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=1, default=float))
    print("\n".join(summary_lines(report)))
    print(f"full report -> {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m normcore", description="Normative modelling with diffusion models.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, device: bool = True) -> None:
        sp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        sp.add_argument("--threads", type=COUNT, default=None,
                        help="CPU threads for torch (default: the cores other processes leave free, re-read "
                             "during training)")
        if device:
            sp.add_argument("--device", default=None, help="auto|cpu|cuda (default: auto)")

    def sampling_noise(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--sampling-noise", choices=list(SAMPLING_NOISE), default=None,
                        help="sobol (quasi-random) or pseudo-random (default: the model's, sobol)")

    def age_resolution(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--age-resolution", dest="score_age_resolution", type=float_between(0, 1000), default=None,
                        metavar="YEARS", help="subjects of the same levels whose ages round to the same multiple of "
                                              "YEARS share their samples (0: only identical ages; default: the "
                                              "model's, 2.5%% of its training age range)")

    def tail_scale(sp: argparse.ArgumentParser, stored: bool = False) -> None:
        sp.add_argument("--tail-scale", choices=list(TAIL_SCALES), default=None,
                        help="scale on which z beyond the outer 1%% of the samples is extrapolated: gaussianised "
                             "(heavy-tailed measures, e.g. real IDPs) or residual (light-tailed ones: normal tails "
                             "in the measures' own units) " + ("(stored in the model; default gaussianised)" if stored
                                          else "(default: the model's)"))

    f = sub.add_parser("fit", help="fit a normative model on healthy controls")
    f.add_argument("data")
    f.add_argument("--age", required=True)
    f.add_argument("--covariates", default="", help="categorical covariates, comma-separated (e.g. sex,site)")
    f.add_argument("--batch-covariates", default="",
                   help="of --covariates, those modelled as batch effects (e.g. site): a shift, a scale and (where "
                        "leave-one-out error says it helps) an age curve per level, no input of the network; scoring "
                        "shares samples across their levels (faster; diffusion backbones only)")
    f.add_argument("--idps", default=None, help="IDP columns, comma-separated (default: all other numeric columns)")
    f.add_argument("--idps-regex", default=None, help="regular expression selecting IDP columns")
    f.add_argument("--backbone", default="film-mlp", choices=list(SAVABLE),
                   help="diffusion denoiser, or shash-baseline: the classic per-IDP model")
    f.add_argument("--epochs", type=COUNT, default=None, help="max epochs (default: auto step budget, early stopping)")
    f.add_argument("--seed", type=SEED, default=0)
    f.add_argument("--transform", default="quantile", choices=["quantile", "yeo-johnson", "standard"])
    f.add_argument("--samples", type=COUNT, default=1000, help="default samples per point stored in the model")
    f.add_argument("--sampling-noise", choices=list(SAMPLING_NOISE), default=None,
                   help="noise behind the samples scores are estimated from, stored in the model (default: sobol, "
                        "quasi-random: less Monte-Carlo error than pseudo-random at the same --samples)")
    tail_scale(f, stored=True)
    f.add_argument("--backbone-params", default=None, metavar="JSON",
                   help='network size, e.g. \'{"width": 128, "depth": 2}\' (advanced)')
    f.add_argument("--timesteps", type=int_at_least(MIN_TIMESTEPS), default=1000, help="diffusion steps T (advanced)")
    f.add_argument("--sampling-steps", type=COUNT, default=None, help="DDIM steps used when scoring (advanced)")
    f.add_argument("--batch-size", type=COUNT, default=256, help="training batch size (advanced)")
    f.add_argument("--id-col", default=None, help="subject ID column (excluded from IDPs)")
    f.add_argument("--group-col", default=None, help="fit only rows where this column equals --control-value")
    f.add_argument("--control-value", default="control")
    f.add_argument("--out", required=True)
    common(f)
    f.set_defaults(func=cmd_fit, device_default="auto")

    s = sub.add_parser("score", help="centiles and z-scores of subjects")
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("--out", required=True)
    s.add_argument("--samples", type=COUNT, default=None, help="samples per subject (default: the model's, 1000)")
    sampling_noise(s)
    tail_scale(s)
    age_resolution(s)
    s.add_argument("--seed", type=SEED, default=None)
    s.add_argument("--allow-unseen", action="store_true",
                   help="score unseen categorical levels by marginalising over the training levels")
    s.add_argument("--id-col", default=None, help="subject ID column (duplicate IDs are reported)")
    s.add_argument("--format", default="normcore", choices=["normcore", "pcntoolkit"],
                   help="normcore: one CSV (the columns above); pcntoolkit: --out is a folder receiving "
                        "Z_NAME.csv, centiles_NAME.csv and statistics_NAME.csv in PCNtoolkit's layout")
    s.add_argument("--pcn-name", default="test", help="NAME of the PCNtoolkit files (default: test)")
    common(s)
    s.set_defaults(func=cmd_score)

    c = sub.add_parser("centiles", help="centile curves on an age grid")
    c.add_argument("model")
    c.add_argument("--ages", required=True, help="START:STOP:STEP")
    c.add_argument("--set", action="append", metavar="COL=VALUE", help="fix a categorical covariate")
    c.add_argument("--quantiles", default="0.05,0.25,0.5,0.75,0.95")
    c.add_argument("--samples", type=COUNT, default=None, help="samples per age (default 4000)")
    sampling_noise(c)
    c.add_argument("--seed", type=SEED, default=None)
    c.add_argument("--out", required=True)
    common(c)
    c.set_defaults(func=cmd_centiles)

    sm = sub.add_parser("sample", help="draw synthetic subjects at given covariates")
    sm.add_argument("model")
    sm.add_argument("covariates")
    sm.add_argument("--n", type=COUNT, default=1)
    sm.add_argument("--seed", type=SEED, default=None)
    sm.add_argument("--allow-unseen", action="store_true")
    sm.add_argument("--out", required=True)
    common(sm)
    sm.set_defaults(func=cmd_sample)

    ev = sub.add_parser("evaluate", help="calibration, dependence, memorisation and clinical metrics")
    ev.add_argument("model")
    ev.add_argument("data", help="held-out table (controls, optionally patients)")
    ev.add_argument("--truth", default=None, help="'synthetic' (DATA.truth.json beside the data) or a truth file")
    ev.add_argument("--group-col", default=None)
    ev.add_argument("--control-value", default="control")
    ev.add_argument("--train", default=None, help="training table, for the memorisation check")
    ev.add_argument("--samples", type=COUNT, default=None)
    sampling_noise(ev)
    tail_scale(ev)
    age_resolution(ev)
    ev.add_argument("--seed", type=SEED, default=0)
    ev.add_argument("--out", required=True)
    common(ev)
    ev.set_defaults(func=cmd_evaluate)

    ad = sub.add_parser("adapt", help="adapt a fitted model to a new site from a few of its healthy controls")
    ad.add_argument("model")
    ad.add_argument("data", help="table of the new site's controls (any subset of the model's IDPs)")
    ad.add_argument("--out", required=True, help="folder for the adapted model (the reference stays as it is)")
    ad.add_argument("--group-col", default=None, help="use only rows where this column equals --control-value")
    ad.add_argument("--control-value", default="control")
    ad.add_argument("--refine", default=None,
                    help="categorical covariates whose known levels are refined too, comma-separated (e.g. site)")
    ad.add_argument("--network-input", default="marginal", choices=["marginal", "embedding"],
                    help="what a diffusion model's network is conditioned on for the new level (nothing for a batch "
                         "covariate, e.g. the shipped reference's site): the mixture over "
                         "training sites (default; better calibrated, see BENCHMARKS.md) or an input fitted to the "
                         "controls")
    common(ad)
    ad.set_defaults(func=cmd_adapt)

    ch = sub.add_parser("change", help="longitudinal change scores between consecutive visits")
    ch.add_argument("model")
    ch.add_argument("data", help="table with one row per visit (age at that visit, covariates, IDPs)")
    ch.add_argument("--id-col", required=True, help="subject ID column")
    ch.add_argument("--visit-col", required=True,
                    help="visit column: numbers, or labels that sort in time order with their digits read as numbers "
                         "(ses-2 before ses-10); a later visit must not be younger")
    ch.add_argument("--group-col", default=None, help="group column; its controls calibrate the change scores")
    ch.add_argument("--control-value", default="control")
    ch.add_argument("--rho", default=None, metavar="R|JSON",
                    help="visit-to-visit correlation of z (one number, or a JSON object per IDP), used when the "
                         "table has fewer than 20 pairs of control visits")
    ch.add_argument("--samples", type=COUNT, default=None)
    tail_scale(ch)
    age_resolution(ch)
    ch.add_argument("--seed", type=SEED, default=None)
    ch.add_argument("--allow-unseen", action="store_true")
    ch.add_argument("--out", required=True)
    common(ch)
    ch.set_defaults(func=cmd_change)

    rp = sub.add_parser("report", help="a subject's deviation report (self-contained HTML, or PDF)")
    rp.add_argument("model")
    rp.add_argument("scores", help="the output of `score` (input columns, then z:/centile: columns)")
    rp.add_argument("--subject", default=None, help="the subject's ID (with --id-col) or row number")
    rp.add_argument("--cohort", action="store_true", help="a cohort report: patients vs controls by --group-col")
    rp.add_argument("--group-col", default=None, help="group column (patients are rows not equal to --control-value)")
    rp.add_argument("--control-value", default="control")
    rp.add_argument("--id-col", default=None, help="subject ID column")
    rp.add_argument("--samples", type=COUNT, default=None, help="samples for expected ranges and curves")
    rp.add_argument("--seed", type=SEED, default=0)
    rp.add_argument("--mri", default=None, metavar="RESULT_DIR",
                    help="the subject's `mri-score --out` folder: adds its abnormality index and slices to the report")
    rp.add_argument("--mri-scan", default=None, metavar="SCAN",
                    help="the scan that was scored (default: the path in RESULT_DIR/result.json)")
    rp.add_argument("--out", required=True, help="report.html or report.pdf")
    common(rp)
    rp.set_defaults(func=cmd_report)

    sy = sub.add_parser("synth", help="synthetic cohort with exact ground truth")
    sy.add_argument("--n", type=COUNT, required=True)
    sy.add_argument("--d", type=COUNT, default=10)
    sy.add_argument("--patients", type=int_at_least(0), default=0, help="number of patients added")
    sy.add_argument("--patient-shift", type=float, default=1.5, help="shift of affected IDPs in z units")
    sy.add_argument("--sites", type=int_at_least(0), default=0)
    sy.add_argument("--seed", type=SEED, default=0)
    sy.add_argument("--out", required=True)
    common(sy, device=False)
    sy.set_defaults(func=cmd_synth)

    from normcore.cli.imaging import add_parsers

    add_parsers(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        fix_threads(args.threads)
    else:
        adapt_threads()  # the cores other processes leave free (normcore/_utils/threads.py)
    if hasattr(args, "device") and args.device is None:
        args.device = getattr(args, "device_default", None)
    if launched_distributed():
        if args.command not in DISTRIBUTED_COMMANDS:
            print(f"error: {args.command} runs in one process; start it with python, not torchrun "
                  f"(torchrun serves {', '.join(DISTRIBUTED_COMMANDS)})", file=sys.stderr)
            return 2
        init_distributed_from_env(args.device if args.device not in (None, "auto") else None)
        args.quiet = args.quiet or not is_main_process()  # one progress stream: rank 0's
    try:
        if getattr(args, "wants_progress", False):
            args.func(args, _stderr_progress(args.quiet))
        else:
            args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system refused: a read-only folder, a full disk, a missing path
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; try fewer rows, IDPs or --samples", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line here, the traceback in a log file
        log = _write_error_log(argv)
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} "
              f"(details in {log}; please report it)", file=sys.stderr)
        return 1
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def _write_error_log(argv: list[str] | None) -> str:
    """Write the current exception's traceback to a log file in the temporary folder; return its path."""
    folder = Path(tempfile.gettempdir()) / "normcore-logs"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"error-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"argv: {argv if argv is not None else sys.argv[1:]}\n{traceback.format_exc()}")
        return str(path)
    except OSError:
        return "(no log: the temporary folder is not writable)"

"""What a fit decided, in words: the sentences ``fit`` prints and the dashboard's Fit page shows after a fit."""

from __future__ import annotations


def kept_denoiser(model) -> str:
    """Which denoiser early stopping kept and why ("" for models without early stopping)."""
    history = getattr(model, "history_", None) or {}
    kept = history.get("kept_step")
    if kept is None:
        return ""
    weighed = "val_crps_copula" in history  # the network won the loss; the CRPS decided
    if kept == 0 and getattr(model, "prior_", None):
        why = (f"the trained network of step {history['loss_kept_step']} had the lower validation loss but a "
               "significantly higher CRPS" if weighed else "no trained network beat it on the validation loss")
        return f"kept: the Gaussian copula of the training latents; {why}"
    if kept == 0:
        return "kept: the untrained network"
    return f"weights of step {kept}" + ("; lower validation loss than the Gaussian copula, whose CRPS was not "
                                        "significantly lower" if weighed else "")


def heavy_tails_note(model, most: int = 8) -> str | None:
    """The IDP sides whose tails were found heavier than normal (:mod:`~normcore.tabular.heavy_tails`), named, or
    None when none were (and for models without a quantile map)."""
    transformer = getattr(model, "transformer_", None)
    sides = transformer.heavy_tail_sides() if transformer is not None else []
    if not sides:
        return None
    by_idp: dict[str, list[str]] = {}
    for j, side in sides:
        by_idp.setdefault(model.idps[j], []).append(side)
    named = [f"{idp} ({' and '.join(s)})" for idp, s in by_idp.items()]
    more = f" and {len(named) - most} more" if len(named) > most else ""
    return (f"heavy tails: {len(sides)} IDP side(s) heavier than normal within age bins follow a generalised Pareto "
            f"tail beyond their outer 5%: {', '.join(named[:most])}{more}")


def point_masses_note(model, most: int = 8) -> str | None:
    """The IDPs with a floor or ceiling many training values share (:mod:`~normcore.tabular.point_masses`), named
    with their value and share, or None when none has (and for models without them)."""
    masses = model.point_masses_ if getattr(model, "is_fitted", False) else []
    if not masses:
        return None
    named = [f"{idp} ({kind} {value:g}, {100 * share:.1f}%)" for idp, kind, value, share in masses]
    more = f" and {len(named) - most} more" if len(named) > most else ""
    return (f"point masses: {len(named)} IDP value(s) shared by many training rows at an extreme; draws stop there "
            f"and a value there is scored within its share: {', '.join(named[:most])}{more}")


def model_notes(model) -> list[str]:
    """What the fitted model holds beyond its weights: the multivariate score's calibration, heavy tails and point
    masses."""
    calibration = getattr(model, "multivariate_calibration_", None)
    return [note for note in (calibration.describe() if calibration is not None else None, heavy_tails_note(model),
                              point_masses_note(model)) if note]


def fit_notes(model) -> list[str]:
    """Every sentence on what the fit decided: the denoiser kept, :func:`model_notes`, then the fit's warnings (rows
    or IDPs dropped)."""
    kept = kept_denoiser(model)
    return ([f"Denoiser: {kept}."] if kept else []) + model_notes(model) + [
        f"warning: {w}" for w in getattr(model, "fit_warnings_", None) or []]

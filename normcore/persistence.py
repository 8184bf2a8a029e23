"""Model folders: weights in safetensors, everything else in a JSON card; atomic saves, code-free loads.

Every card names its ``format`` (the model type's tag) and ``format_version``. A model type that changes
what it writes raises its version and registers a migration from the previous version; loading applies
the migrations in turn, so a card written by any earlier version loads, and one written by a newer
version is refused with a message.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from normcore._utils.atomic import folder_atomic, recover_folder
from normcore._utils.errors import InputError

WEIGHTS = "model.safetensors"
CARD = "model.json"
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024

Migration = Callable[[dict, dict[str, torch.Tensor]], None]
"""Upgrades a card (in place) from version k to k + 1; may read the weights to recover what old cards lacked."""


# card sections that describe how a model was made (histories may hold inf or NaN legitimately); every other
# number in a card is a parameter of the model and must be finite
DESCRIPTIVE_SECTIONS = ("training", "training_data", "info", "adaptation", "fit_warnings", "versions", "metrics",
                        "evaluation", "held_out", "created")


def _is_model_dir(path: Path) -> bool:
    """A folder holding only a model's weights and card (a model nested in another, see ``save_model_dir``)."""
    return path.is_dir() and {p.name for p in path.iterdir()} <= {WEIGHTS, CARD}


def check_model_destination(path: str | Path, flag: str = "output") -> Path:
    """Refuse, before any work, a destination a model folder cannot be saved to without harm.

    A model folder is replaced as a whole, so ``path`` must be new, empty or a model folder (only the weights
    and card, and model folders nested in it): never a file, never a folder holding anything else (a user's data).
    Its parent must be writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: is a file; name a new folder for the model")
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in (WEIGHTS, CARD) and not _is_model_dir(p))
        if others:
            raise InputError(f"{flag} {path}: the folder holds other files ({', '.join(others[:3])}); a model "
                             "folder is replaced as a whole, so name a new or empty folder")
    check_writable_parent(path, flag)
    return path


def check_writable_parent(path: Path, flag: str) -> None:
    """Refuse a path whose nearest existing ancestor is a file or a folder this process cannot write in."""
    parent = Path(path).resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write in {parent} (permission denied)")


def check_card_numbers(card: dict, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse a card or weights holding non-finite numbers where the model computes with them."""
    def walk(value, where: str) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return where
        if isinstance(value, dict):
            for key, item in value.items():
                if where == "" and key in DESCRIPTIVE_SECTIONS:
                    continue
                found = walk(item, f"{where}.{key}" if where else str(key))
                if found:
                    return found
        if isinstance(value, list):
            for i, item in enumerate(value):
                found = walk(item, f"{where}[{i}]")
                if found:
                    return found
        return None

    bad = walk(card, "")
    if bad:
        raise InputError(f"{path}: the model card has a non-finite number at {bad}; the model is damaged")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{path}: the weights tensor {name!r} holds non-finite values; the model is damaged")


def save_model_dir(path: str | Path, tensors: dict[str, torch.Tensor], card: dict,
                   nested: dict[str, Callable[[Path], object]] | None = None) -> Path:
    """Write ``tensors`` and ``card`` into folder ``path`` atomically (the old model stays until the new is whole).

    ``path`` is checked first (:func:`check_model_destination`). ``nested`` maps a subfolder name to a writer
    (e.g. another model's ``save``) called with that subfolder inside the folder being written, so the whole
    appears at once.
    """
    check_model_destination(path, "model folder")
    with folder_atomic(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / CARD).write_text(json.dumps(card, indent=1, allow_nan=True))
        for name, write in (nested or {}).items():
            write(tmp / name)
    return Path(path)


def read_card(path: str | Path) -> dict:
    """The JSON card of a model folder (nothing else is read)."""
    path = Path(path)
    recover_folder(path)
    if not (path / CARD).is_file():
        raise InputError(f"{path}: not a model folder (expected {CARD} and {WEIGHTS})")
    try:
        card = json.loads((path / CARD).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path / CARD}: not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise InputError(f"{path / CARD}: not a valid model card")
    return card


def load_model_dir(path: str | Path, expected_format: str, version: int = 1,
                   migrations: dict[int, Migration] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a model folder without executing anything from it; check its format; migrate its card to ``version``.

    ``migrations[k]`` upgrades a version-k card to k + 1. Cards without ``format_version`` are version 1.
    """
    path = Path(path)
    card = read_card(path)
    if card.get("format") != expected_format:
        raise InputError(f"{path}: model format {card.get('format')!r} is not {expected_format!r}")
    if not (path / WEIGHTS).is_file():
        raise InputError(f"{path}: not a model folder (expected {CARD} and {WEIGHTS})")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise InputError(f"{path / WEIGHTS}: unreadable weights ({exc})") from None
    found = card.get("format_version", 1)
    if not isinstance(found, int) or found < 1:
        raise InputError(f"{path / CARD}: invalid format_version {found!r}")
    if found > version:
        raise InputError(f"{path}: written by a newer normcore (card format version {found}; this version reads up "
                         f"to {version})")
    for k in range(found, version):
        (migrations or {})[k](card, tensors)
        card["format_version"] = k + 1
    check_card_numbers(card, tensors, path)
    return tensors, card


def model_dir_to_zip(path: str | Path) -> bytes:
    """Pack a model folder (weights + card) into zip bytes for download."""
    path = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (WEIGHTS, CARD):
            zf.write(path / name, arcname=name)
    return buf.getvalue()


def zip_to_model_dir(data: bytes, path: str | Path) -> Path:
    """Unpack an uploaded model zip into ``path``, accepting only the two expected plain files.

    Sizes are checked from the archive's directory before anything is inflated; the folder is replaced
    atomically, so a bad archive leaves an existing model at ``path`` as it was.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise InputError("model archive is too large")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InputError("uploaded model is not a zip archive") from None
    names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
    if set(names) != {WEIGHTS, CARD}:
        raise InputError(f"model archive must hold exactly {WEIGHTS} and {CARD}; found {sorted(names)}")
    if sum(zf.getinfo(m).file_size for m in names.values()) > MAX_ARCHIVE_BYTES:
        raise InputError("the model archive inflates to more than 512 MB")
    check_model_destination(path, "model folder")
    with folder_atomic(path) as tmp:
        for name, member in names.items():
            try:
                (tmp / name).write_bytes(zf.read(member))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                raise InputError(f"{name} in the model archive is damaged ({exc})") from None
    return Path(path)

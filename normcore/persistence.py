"""Model folders: weights in safetensors, everything else in a JSON card; atomic saves, code-free loads.

Every card names its ``format`` (the model type's tag) and ``format_version``. A model type that changes
what it writes raises its version and registers a migration from the previous version; loading applies
the migrations in turn, so a card written by any earlier version loads, and one written by a newer
version is refused with a message.
"""

from __future__ import annotations

import io
import json
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


def save_model_dir(path: str | Path, tensors: dict[str, torch.Tensor], card: dict) -> Path:
    """Write ``tensors`` and ``card`` into folder ``path`` atomically (the old model stays until the new is whole)."""
    with folder_atomic(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / CARD).write_text(json.dumps(card, indent=1, allow_nan=True))
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
    with folder_atomic(path) as tmp:
        for name, member in names.items():
            try:
                (tmp / name).write_bytes(zf.read(member))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                raise InputError(f"{name} in the model archive is damaged ({exc})") from None
    return Path(path)

"""Model folders: weights in safetensors, everything else in JSON; atomic saves, code-free loads."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from normcore.errors import InputError

WEIGHTS = "model.safetensors"
CARD = "model.json"
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024


def save_model_dir(path: str | Path, tensors: dict[str, torch.Tensor], card: dict) -> Path:
    """Write ``tensors`` and ``card`` into folder ``path`` atomically.

    Files go to a temporary sibling folder that is renamed into place; an existing model at ``path``
    is replaced only after the new one is complete, so an interrupted save never leaves half a model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / CARD).write_text(json.dumps(card, indent=1, allow_nan=True))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model_dir(path: str | Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a model folder without executing anything from it; check its format tag."""
    path = Path(path)
    if not (path / CARD).is_file() or not (path / WEIGHTS).is_file():
        raise InputError(f"{path}: not a model folder (expected {CARD} and {WEIGHTS})")
    try:
        card = json.loads((path / CARD).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path / CARD}: not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != expected_format:
        raise InputError(f"{path}: model format {card.get('format') if isinstance(card, dict) else None!r} "
                         f"is not {expected_format!r}")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise InputError(f"{path / WEIGHTS}: unreadable weights ({exc})") from None
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
    """Unpack an uploaded model zip into ``path``, accepting only the two expected plain files."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise InputError("model archive is too large")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InputError("uploaded model is not a zip archive") from None
    names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
    if set(names) != {WEIGHTS, CARD}:
        raise InputError(f"model archive must hold exactly {WEIGHTS} and {CARD}; found {sorted(names)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, member in names.items():
            info = zf.getinfo(member)
            if info.file_size > MAX_ARCHIVE_BYTES:
                raise InputError(f"{name} in the archive is too large")
            (tmp / name).write_bytes(zf.read(member))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path

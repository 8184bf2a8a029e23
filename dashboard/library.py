"""Where the dashboard keeps models and the work of a session: private per session, shared only on request.

Every browser session has a random key (in its URL, so that a reloaded page finds its work again) and a
private folder under the sessions root holding the models it saved or uploaded, its autosaved last fit or
adaptation, and its last uploaded table. Nothing in one session's folder is listed in another session. A
model becomes visible to every session only when its user publishes it to the shared library folder.
Names never silently replace a model: saving or publishing under a taken name needs ``replace=True``.
Session folders untouched for ``KEEP_DAYS`` are removed when a new session starts.

Plain functions of paths (no Streamlit), tested directly.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from normcore import InputError
from normcore._utils.atomic import DIR_MODE, write_atomic, write_text_atomic
from normcore.persistence import CARD, model_dir_to_zip, zip_to_model_dir
from normcore.tabular.io import read_table

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEEP_DAYS = 14
AUTOSAVE = "last-work"  # the session's autosaved model (its last fit or adaptation)
TABLE = "last-table.csv"
STATE = "session.json"


def new_session_key() -> str:
    """A random 128-bit key naming a session (URL-safe, 22 characters)."""
    return secrets.token_urlsafe(16)


def valid_key(key: str | None) -> bool:
    return bool(key) and bool(KEY_PATTERN.fullmatch(key))


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or "") or name.startswith("."):
        raise InputError("use 1-64 letters, digits, '.', '_' or '-' for the name (not starting with '.')")
    return name


@dataclass
class SessionLibrary:
    """One session's private model folder and the shared library, under ``root``."""

    root: Path
    key: str

    def __post_init__(self) -> None:
        if not valid_key(self.key):
            raise InputError("invalid session key")
        self.root = Path(self.root)

    @property
    def folder(self) -> Path:
        """The session's private folder (created 0700: work in progress is nobody else's)."""
        path = self.root / "sessions" / self.key
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        return path

    @property
    def models_dir(self) -> Path:
        path = self.folder / "models"
        path.mkdir(exist_ok=True)
        return path

    @property
    def shared_dir(self) -> Path:
        """The library every session sees (published models; normal permissions)."""
        path = self.root / "user"
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, DIR_MODE)
        return path

    def touch(self) -> None:
        os.utime(self.folder)

    # ------------------------------------------------------------------ listing
    def saved(self) -> dict[str, Path]:
        """This session's saved models (``mine: NAME``), then the published ones (``shared: NAME``)."""
        out = {f"mine: {p.name}": p for p in _model_dirs(self.models_dir)}
        out.update({f"shared: {p.name}": p for p in _model_dirs(self.shared_dir)})
        return out

    # ------------------------------------------------------------------ saving
    def save(self, model, name: str, replace: bool = False) -> Path:
        """Save ``model`` privately as ``name``; a taken name needs ``replace=True``."""
        target = self.models_dir / check_name(name)
        if (target / CARD).is_file() and not replace:
            raise InputError(f"a model named {name!r} is already saved in this session; choose another name "
                             "or replace it")
        return model.save(target)

    def publish(self, name: str, replace: bool = False) -> Path:
        """Copy this session's saved model ``name`` into the shared library, visible to every session."""
        source = self.models_dir / check_name(name)
        if not (source / CARD).is_file():
            raise InputError(f"no model named {name!r} is saved in this session")
        target = self.shared_dir / name
        if (target / CARD).is_file() and not replace:
            raise InputError(f"the shared library already holds a model named {name!r}; choose another name or "
                             "replace it")
        return zip_to_model_dir(model_dir_to_zip(source), target)

    def import_zip(self, data: bytes, name: str) -> Path:
        """Unpack an uploaded model archive into this session (refused archives leave nothing behind)."""
        target = self.models_dir / check_name(name)
        if (target / CARD).is_file():
            raise InputError(f"a model named {name!r} is already saved in this session")
        return zip_to_model_dir(data, target)

    # ------------------------------------------------------------------ autosave and restore
    def autosave(self, model, label: str) -> Path:
        """Keep the session's latest fitted or adapted model (replacing the previous autosave)."""
        path = model.save(self.folder / AUTOSAVE)
        self._update_state(model_label=label)
        return path

    def save_table(self, frame: pd.DataFrame, name: str, mapping: dict) -> None:
        """Keep the session's active uploaded table and its column mapping, to offer after a reload (written
        as it is: the formula escaping of exports would change the user's own cells on the way back)."""
        write_atomic(self.folder / TABLE, lambda tmp: frame.to_csv(tmp, index=False))
        self._update_state(table_name=name, mapping=mapping)

    def restorable(self) -> dict:
        """What a reloaded page can restore: ``table_name``/``mapping`` and ``model_label`` when present."""
        state = self._state()
        out = {}
        if (self.folder / TABLE).is_file() and "table_name" in state:
            out.update(table_name=state["table_name"], mapping=state.get("mapping") or {})
        if (self.folder / AUTOSAVE / CARD).is_file() and "model_label" in state:
            out["model_label"] = state["model_label"]
        return out

    def restored_table(self) -> pd.DataFrame:
        return read_table(self.folder / TABLE, name="the saved table")

    @property
    def autosaved_model(self) -> Path:
        return self.folder / AUTOSAVE

    def _state(self) -> dict:
        path = self.folder / STATE
        try:
            state = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            state = {}
        return state if isinstance(state, dict) else {}

    def _update_state(self, **entries) -> None:
        state = self._state()
        state.update(entries, updated=time.time())
        write_text_atomic(self.folder / STATE, json.dumps(state, default=str))


def _model_dirs(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if (p / CARD).is_file() and not p.name.startswith(".")] \
        if folder.is_dir() else []


def remove_stale_sessions(root: Path, keep_days: float = KEEP_DAYS, now: float | None = None) -> list[str]:
    """Delete session folders untouched for ``keep_days``; return the keys removed."""
    base = Path(root) / "sessions"
    if not base.is_dir():
        return []
    cutoff = (now or time.time()) - keep_days * 86400
    removed = []
    for folder in base.iterdir():
        if folder.is_dir() and valid_key(folder.name) and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed

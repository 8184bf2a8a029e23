"""The one atomic writer: files and folders appear complete at their path or not at all.

Files are written to a temporary sibling, flushed to disk and renamed over the target. Folders are
built in a temporary sibling and swapped in: the old folder is renamed aside, the new one renamed into
place, the old one removed. An interruption between the two renames leaves the old folder aside under
a name that :func:`recover_folder` puts back, so a path holds either the old or the new complete folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

FILE_MODE = 0o644
DIR_MODE = 0o755


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_atomic(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path``; nothing is left behind on failure.

    ``suffix`` keeps the extension of the temporary file (writers that choose a format by it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".part{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp files are 0600: keep them readable like any saved file
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


def recover_folder(path: str | Path) -> None:
    """Finish or undo an interrupted :func:`folder_atomic` swap so that ``path`` holds a complete folder."""
    path = Path(path)
    old = _aside(path)
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)  # the swap completed; only the clean-up was missed
        else:
            os.replace(old, path)  # interrupted between the two renames: the old folder comes back


@contextlib.contextmanager
def folder_atomic(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling folder; on normal exit it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        os.chmod(tmp, DIR_MODE)
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                os.chmod(child, FILE_MODE)
                _fsync_file(child)
        old = _aside(path)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

"""Where edit-gym keeps what it builds once (the tiny model, converted checkpoints, known-fact lists).

The folder defaults to ``~/.cache/edit_gym`` (or ``$XDG_CACHE_HOME/edit_gym``) and is overridden by
the ``EDIT_GYM_CACHE`` environment variable. Every entry is written into a temporary sibling folder
and renamed into place, under a file lock, so a crash or a second process never leaves a half-written
entry behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

CACHE_ENV_VAR = "EDIT_GYM_CACHE"


def cache_dir() -> Path:
    """The root cache folder (created on first use)."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        root = Path(override).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "edit_gym"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cached_folder(name: str, build: Callable[[Path], None], *, complete_marker: str = "COMPLETE") -> Path:
    """Return ``cache_dir()/name``, calling ``build(tmp_folder)`` first if it is missing.

    ``build`` writes into an empty temporary folder; the folder is renamed into place only once
    ``build`` returns, and a marker file records that it is whole. Concurrent callers wait on a lock.
    """
    root = cache_dir()
    target = root / name
    marker = target / complete_marker
    if marker.exists():
        return target
    with FileLock(str(root / f".{name}.lock")):
        if marker.exists():
            return target
        if target.exists():  # a partial folder from an older, interrupted writer
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            build(tmp)
            (tmp / complete_marker).write_text("ok\n")
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_folder(path: Path, build: Callable[[Path], None]) -> None:
    """Write a whole folder (a checkpoint) so that ``path`` is always either the old or the new one.

    ``build`` fills a temporary sibling; the old folder (if any) is moved aside, the new one renamed
    in, and only then is the old one deleted. An interruption leaves the previous folder in place
    (or, in the instant between the two renames, beside it as ``.<name>.old``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.parent / f".{path.name}.old"
    try:
        build(tmp)
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

"""Where edit-gym keeps what it builds once (the tiny model, converted checkpoints, C0, known-fact lists).

The folder defaults to ``~/.cache/edit_gym`` (or ``$XDG_CACHE_HOME/edit_gym``) and is overridden by
the ``EDIT_GYM_CACHE`` environment variable. Every entry is written into a temporary sibling and
renamed into place, so a crash or a second process never leaves a half-written entry behind, and
carries a manifest (format version, SHA-256 of each file) that is checked when it is read (a cache
file at every read, a cached folder once per process). An entry that is missing its manifest, from another cache version or damaged is rebuilt,
with a warning naming it: a cache is only ever recomputable work, never the user's data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

CACHE_ENV_VAR = "EDIT_GYM_CACHE"
CACHE_VERSION = 1
MANIFEST_FORMAT = "edit-gym-cache"
_verified: set[tuple[str, float]] = set()  # (path, mtime) of entries checked by this process


def cache_name(text: str, limit: int = 60) -> str:
    """``text`` as part of a cache file name: letters, digits, ``-_.`` kept, the rest ``_``; the
    last ``limit`` characters (model names differ at their end)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[-limit:]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """One SHA-256 over every file in ``folder`` (relative paths and contents, sorted).

    Identifies the weights behind a result: two checkpoints saved under the same folder name by
    different trainings get different digests, so results from them are never pooled as one setting.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder} holds no files to digest")
    listing = {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def _manifest(files: dict[str, str]) -> str:
    return json.dumps({"format": MANIFEST_FORMAT, "version": CACHE_VERSION, "sha256": files}, indent=1)


def _manifest_problem(meta: object) -> str | None:
    """What is wrong with a parsed manifest itself (format, version, file list), or None."""
    if not isinstance(meta, dict) or meta.get("format") != MANIFEST_FORMAT:
        return "not an edit-gym cache manifest"
    if meta.get("version") != CACHE_VERSION:
        return f"cache version {meta.get('version')!r}, this edit-gym writes {CACHE_VERSION}"
    if not isinstance(meta.get("sha256"), dict) or not meta["sha256"]:
        return "manifest lists no files"
    return None


def _damage(manifest_path: Path, root: Path) -> str | None:
    """Why the entry described by ``manifest_path`` cannot be used, or None if it is whole."""
    try:
        meta = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return "no manifest (unfinished, or from an older edit-gym)"
    except (OSError, ValueError) as err:
        return f"unreadable manifest ({err})"
    problem = _manifest_problem(meta)
    if problem is not None:
        return problem
    for name, expected in meta["sha256"].items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != expected:
            return f"{name} does not match its checksum (corrupted or partial)"
    return None


def _whole(manifest_path: Path, root: Path, what: Path, warn: bool = True) -> bool:
    """True if the entry is whole; checks the checksums once per process (and file version)."""
    if not manifest_path.exists():
        if warn and what.exists():
            warnings.warn(f"cache entry {what}: no manifest; rebuilding it", stacklevel=3)
        return False
    try:
        key = (str(manifest_path), manifest_path.stat().st_mtime)
        if key in _verified:
            return True
        problem = _damage(manifest_path, root)
    except OSError as err:  # removed by another process while we looked
        problem = f"changed while being checked ({err})"
    if problem is not None:
        if warn:
            warnings.warn(f"cache entry {what}: {problem}; rebuilding it", stacklevel=3)
        return False
    _verified.add(key)
    return True


def read_cache_file(path: Path) -> bytes | None:
    """The bytes of a cache file written by :func:`write_cache_file`, or None when it is absent or
    fails its manifest (the caller recomputes it; a warning names the problem). The bytes returned
    are the bytes checked (one read), even if another process rewrites the file meanwhile."""
    path = Path(path)
    try:
        data = path.read_bytes()
        meta = json.loads(_manifest_path(path).read_text())
    except (OSError, ValueError):
        if path.exists():
            warnings.warn(f"cache entry {path}: no readable manifest; rebuilding it", stacklevel=2)
        return None
    problem = _manifest_problem(meta)
    if problem is None and hashlib.sha256(data).hexdigest() != meta["sha256"].get(path.name):
        problem = "does not match its checksum (corrupted or partial)"
    if problem is not None:
        warnings.warn(f"cache entry {path}: {problem}; rebuilding it", stacklevel=2)
        return None
    return data


def write_cache_file(path: Path, data: bytes) -> None:
    """Write a cache file, then its manifest ``.<name>.manifest.json`` (so a file without a current
    manifest is never trusted)."""
    path = Path(path)
    manifest = _manifest_path(path)
    manifest.unlink(missing_ok=True)
    atomic_write_bytes(path, data)
    atomic_write_text(manifest, _manifest({path.name: hashlib.sha256(data).hexdigest()}))


def _manifest_path(path: Path) -> Path:
    return path.parent / f".{path.name}.manifest.json"


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


FOLDER_MANIFEST = "MANIFEST.json"


def cached_folder(name: str, build: Callable[[Path], None]) -> Path:
    """Return ``cache_dir()/name``, calling ``build(tmp_folder)`` first if it is missing or damaged.

    ``build`` writes into an empty temporary folder; a manifest with every file's SHA-256 is added
    and the folder renamed into place only once ``build`` returns. Concurrent callers wait on a lock.
    """
    root = cache_dir()
    target = root / name
    manifest = target / FOLDER_MANIFEST
    if _whole(manifest, target, target, warn=False):  # the common case, without the lock
        return target
    with FileLock(str(root / f".{name}.lock")):
        if _whole(manifest, target, target):
            return target
        if target.exists():  # partial, damaged or from an older edit-gym
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            build(tmp)
            files = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / FOLDER_MANIFEST).write_text(_manifest(files))
            os.replace(tmp, target)
            _verified.add((str(manifest), manifest.stat().st_mtime))
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


def _usual_permissions(folder: Path) -> None:
    """What a plain ``mkdir`` / ``open`` would give, under the umask: ``mkdtemp`` makes the folder
    0700, and some writers (safetensors) make their files 0600."""
    mask = _umask()
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


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
        _usual_permissions(tmp)
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

"""Checkpoints that ship with the package, by short name.

The trained agents behind the result tables live in ``edit_gym/checkpoints/NAME/`` (safetensors and
JSON only: loading one never runs code), listed in ``edit_gym/checkpoints/index.json`` with what each
is, the SHA-256 digest of its folder (:func:`edit_gym.cache.folder_sha256`, the digest the result
records carry) and the exact command that made it. ``--checkpoint NAME`` and ``editor="rledit:NAME"``
take these names wherever they take a folder; a folder that exists under that path wins, so a local
checkpoint is never shadowed. ``edit-gym checkpoints`` lists them.

A shipped folder whose files no longer match the index's digest is refused naming the folder: a
table is never computed from a checkpoint other than the one it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "checkpoints"
INDEX_FILE = "index.json"
INDEX_FORMAT = "edit-gym-shipped-checkpoints"
INDEX_VERSION = 1
KINDS = ("rledit", "hiedit")


@dataclass(frozen=True)
class Shipped:
    """One shipped checkpoint: its name, kind, model, what it is, its digest and the command behind it."""

    name: str
    kind: str
    model: str
    what: str
    sha256: str
    command: str


def _read_index(folder: Path) -> list[Shipped]:
    path = folder / INDEX_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        entries = [Shipped(**entry) for entry in data["checkpoints"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a shipped-checkpoint index ({type(err).__name__}: {err})") from None
    for entry in entries:
        _check_entry(entry, path)
    return entries


def _check_entry(entry: Shipped, path: Path) -> None:
    if entry.kind not in KINDS:
        raise ValueError(f"{path}: entry {entry.name!r} has kind {entry.kind!r}, not one of {KINDS}")
    if not entry.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{path}: entry name {entry.name!r} is not a plain word (letters, digits, - and _)")


def shipped_checkpoints(folder: Path | None = None) -> list[Shipped]:
    """Every shipped checkpoint (in ``folder``, default :data:`SHIPPED_DIR`), in index order."""
    return _read_index(Path(folder or SHIPPED_DIR))


def ship(source: str | Path, entry: Shipped, folder: Path | None = None) -> Shipped:
    """Copy the checkpoint folder ``source`` to ``folder/entry.name`` and list it in the index with
    the copy's digest (``entry.sha256`` is ignored); an entry of the same name is replaced. The
    folder and the index are each written atomically, the folder first."""
    import dataclasses
    import shutil

    from edit_gym.cache import atomic_write_folder, atomic_write_text, folder_sha256

    source, folder = Path(source), Path(folder or SHIPPED_DIR)
    files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else []
    if not files or any(p.suffix not in (".json", ".safetensors") for p in files):
        raise ValueError(f"{source} is not a checkpoint folder of .json and .safetensors files only")
    _check_entry(entry, folder / INDEX_FILE)
    entries = [e for e in _read_index(folder) if e.name != entry.name]

    def build(tmp: Path) -> None:
        for p in files:
            shutil.copyfile(p, tmp / p.name)

    atomic_write_folder(folder / entry.name, build)
    entry = dataclasses.replace(entry, sha256=folder_sha256(folder / entry.name))
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "checkpoints": [dataclasses.asdict(e) for e in [*entries, entry]],
    }
    atomic_write_text(folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")
    return entry


_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _verified_digest(path: Path) -> str:
    """``folder_sha256(path)``, computed again only when a file of ``path`` changed (name, size or
    mtime): an environment resolves the same shipped name several times while it is built."""
    from edit_gym.cache import folder_sha256

    stats = {p.relative_to(path).as_posix(): p.stat() for p in sorted(path.rglob("*")) if p.is_file()}
    key = (str(path.resolve()), tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats.items()))
    if key not in _DIGESTS:
        _DIGESTS[key] = folder_sha256(path)
    return _DIGESTS[key]


def resolve_checkpoint(name_or_path: str, folder: Path | None = None) -> str:
    """A checkpoint folder for ``name_or_path``: the path itself if it exists (or is not a shipped
    name), else the shipped checkpoint of that name, verified against its recorded digest."""
    if Path(name_or_path).exists():
        return name_or_path
    entry = next((e for e in shipped_checkpoints(folder) if e.name == name_or_path), None)
    if entry is None:
        return name_or_path  # the caller's loader says what is missing
    path = Path(folder or SHIPPED_DIR) / entry.name
    if not path.is_dir() or _verified_digest(path) != entry.sha256:
        raise ValueError(
            f"shipped checkpoint {entry.name!r} ({path}) does not match its digest in {INDEX_FILE}: "
            "reinstall the package or rerun its command (`edit-gym checkpoints`)"
        )
    return str(path)

"""Evaluation result files: JSON written atomically, with a format, a version and a checksum.

``edit-gym eval --json FILE`` writes one; ``edit-gym plot FILE`` and :func:`load_result` read it
back and refuse a file whose content no longer matches its SHA-256 (edited by hand, truncated,
damaged), naming the problem. Files written before results carried a format load as they are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

RESULT_FORMAT = "edit-gym-result"
RESULT_VERSION = 1


def json_digest(record: dict) -> str:
    """SHA-256 of a JSON record's content without its own ``sha256`` field (the record's checksum)."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_result(result: dict, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (temporary file, then rename) with format, version and SHA-256."""
    from edit_gym.cache import atomic_write_text

    stamped = {**result, "format": RESULT_FORMAT, "version": RESULT_VERSION}
    stamped["sha256"] = json_digest(stamped)
    atomic_write_text(Path(path), json.dumps(stamped, indent=2))
    return Path(path)


def load_result(path: str | Path) -> dict:
    """A result file's content, after checking its format, version and checksum (ValueError if not)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"run file {str(p)!r} not found (write one with `edit-gym eval ... --json FILE`)")
    try:
        result = json.loads(p.read_text())
    except ValueError as err:
        raise ValueError(f"{str(p)!r} is not valid JSON (truncated or damaged?): {err}") from None
    if not isinstance(result, dict):
        raise ValueError(f"{str(p)!r} is not an edit-gym result (a JSON object is expected)")
    if "format" not in result:
        return result  # written before result files carried a format
    if result["format"] != RESULT_FORMAT:
        raise ValueError(f"{str(p)!r} is a {result['format']!r} file, not an edit-gym result")
    if result.get("version") != RESULT_VERSION:
        raise ValueError(
            f"{str(p)!r}: result version {result.get('version')!r}, this edit-gym reads {RESULT_VERSION}"
        )
    if result.get("sha256") != json_digest(result):
        raise ValueError(f"{str(p)!r} does not match its checksum (edited or damaged after it was written)")
    return result

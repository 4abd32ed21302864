"""Edit data: the request type, the built-in fact set and loaders (imports no torch)."""

from edit_gym.data.builtin import BUILTIN_DATASETS, builtin_requests, resolve_known_only
from edit_gym.data.loaders import load_requests, requests_from_records
from edit_gym.data.request import EditRequest, InvalidRecordError, Probe

__all__ = [
    "BUILTIN_DATASETS",
    "EditRequest",
    "InvalidRecordError",
    "Probe",
    "builtin_requests",
    "load_requests",
    "requests_from_records",
    "resolve_known_only",
]

"""Ids that servers and records hand us, checked by one rule before they are used anywhere.

A server's answer (create, remix, edit, extend, a page of the job list, a character) and a
ledger or receipt record are data from elsewhere: the id they carry names a file, an S3
key, a record, a temporary file and a log line. One rule decides whether it may:
OpenAI's ``video_...`` / ``char_...`` / ``file-...`` ids and LiteLLM's base64 ones (which
hold ``+``, ``/`` and ``=``) pass; ``..``, spaces, control characters, quotes and anything
long do not. In file names and keys an id's ``/`` becomes ``_`` (:func:`path_component`),
so a base64 id is one path component, never a folder.
"""

from __future__ import annotations

import re

from .text import shown

ID_RULE = "3 to 512 letters, digits and _-+/=.: that start with a letter or digit and hold no '..'"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-+/=.:]{2,511}")


def is_safe_id(value: object) -> bool:
    """Whether ``value`` is an id that may name a file, a key, a record or a log line."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and ".." not in value


def path_component(video_id: str) -> str:
    """The id as one file name or key component: ``/`` (LiteLLM's base64) becomes ``_``.

    Raises ``ValueError`` for an id that breaks the rule: callers check ids where they
    arrive, so this is the last line, not the first.
    """
    if not is_safe_id(video_id):
        raise ValueError(f"not a safe id ({ID_RULE}): {shown(video_id)}")
    return video_id.replace("/", "_")

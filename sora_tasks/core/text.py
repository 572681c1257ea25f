"""Untrusted text made safe to show: cut to a length with a marker, and escaped for markdown.

Manifest rows, server answers and file names reach artifacts, messages and logs. Whoever
wrote them must not be able to end a table, add a heading, make a link or an image, or
fill a log line with a megabyte. Every artifact builds its markdown through this module:

* :func:`shorten` cuts a value with a visible marker (``… (1,048,576 characters, cut)``).
* :func:`markdown_text` escapes every markdown-active character and turns line breaks
  and control characters into spaces, so the value is one run of literal text.
* :func:`markdown_code` is a code span when the value cannot leave one, else escaped text.
* :func:`link_target` keeps only ``https:``/``http:`` URLs (presigned S3 URLs are those)
  and scheme-less file paths (percent-encoded); :func:`markdown_link` and
  :func:`markdown_image` show anything else as escaped text, never as a link.

Pure text, no imports from the rest of the core: errors, storage and every floor above use it.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlsplit

# What a value echoed in a message or a log line keeps (a real path or id is far shorter).
SHOWN_CHARS = 300
# A markdown cell or error line keeps this much; the table artifact has the rest.
CELL_CHARS = 500

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that
# start or end something (emphasis, code, links, images, tables, headings, lists, HTML,
# entities, strikethrough, math in renderers that have it).
_ACTIVE = frozenset("\\`*_{}[]()#+-.!|<>~&$^=")
# Bidirectional overrides make text read differently from what it is ("txt.exe" shown as "exe.txt").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# What a browser would take as a link's end, a new attribute or whitespace, even percent-free.
_URL_ALLOWED = re.compile(r"^[A-Za-z0-9\-._~:/?#@!$&*+,;=%]+$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
LINK_SCHEMES = ("https", "http")


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters, cut)"


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut by :func:`shorten` (``repr`` already makes control characters visible)."""
    return shorten(repr(value), limit)


def is_control(char: str) -> bool:
    """A character that breaks a line, moves the cursor or reorders text: C0/C1 controls, DEL, line/paragraph
    separators and the bidirectional overrides."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS


def first_control(text: str) -> int | None:
    """The index of the first control character in ``text`` (see :func:`is_control`), or None."""
    return next((index for index, char in enumerate(text) if is_control(char)), None)


def markdown_text(value: object, limit: int = CELL_CHARS) -> str:
    """``value`` as literal markdown text on one line: shortened, controls made spaces, active characters escaped.

    An ``_`` between two letters or digits is left alone: CommonMark never reads an
    intraword underscore as emphasis, and ids and file names stay readable in the source.
    """
    text = shorten(str(value), limit)
    out: list[str] = []
    for index, char in enumerate(text):
        if is_control(char):
            out.append(" ")
        elif char == "_" and 0 < index < len(text) - 1 and text[index - 1].isalnum() and text[index + 1].isalnum():
            out.append(char)
        elif char in _ACTIVE:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def markdown_code(value: object, limit: int = CELL_CHARS) -> str:
    """``value`` in a code span when it cannot end one (no backtick, pipe, control or edge space), else escaped text."""
    text = shorten(str(value), limit)
    if text and text == text.strip() and "`" not in text and "|" not in text and first_control(text) is None:
        return f"`{text}`"
    return markdown_text(text, limit)


def link_target(url: str | None) -> str | None:
    """What a markdown link may point at, or None when ``url`` must be shown as text.

    An ``https:``/``http:`` URL with a host and only URL characters (nothing that could
    close the link or start an attribute) is kept as is; a path without a scheme
    (absolute or relative, not ``//host``) is percent-encoded, so it stays a file link.
    Every other scheme (``javascript:``, ``data:``, ``vbscript:``, ``file:``, ``s3:``) is refused.
    """
    if not url:
        return None
    scheme = _SCHEME.match(url)
    if scheme is not None:
        if scheme.group(1).lower() not in LINK_SCHEMES or not _URL_ALLOWED.match(url):
            return None
        try:
            host = urlsplit(url).netloc
        except ValueError:
            return None
        return url if host else None
    if url.startswith(("//", "\\")) or first_control(url) is not None:
        return None  # a host-relative URL leaves the site; a backslash is read as one by browsers
    return quote(url, safe="/")


def markdown_link(text: object, url: str | None) -> str:
    """``[text](url)`` when :func:`link_target` keeps ``url``, else ``text`` alone, escaped."""
    target = link_target(url)
    label = markdown_text(text)
    return f"[{label}]({target})" if target and label else label


def markdown_image(alt: object, url: str | None) -> str:
    """``![alt](url)`` when :func:`link_target` keeps ``url``, else nothing (an image shown as text helps nobody)."""
    target = link_target(url)
    return f"![{markdown_text(alt)}]({target})" if target else ""


# A preview's own bytes, inlined by the flow that stored it (a local file a browser on another
# machine cannot load): an image type and base64 only, so nothing in it can close the image.
_DATA_IMAGE = re.compile(r"^data:image/(?:webp|jpeg|png);base64,[A-Za-z0-9+/]+={0,2}$")


def markdown_inline_image(alt: object, url: str | None) -> str:
    """:func:`markdown_image`, also for a ``data:image/{webp,jpeg,png};base64,...`` URL (no other ``data:``)."""
    if url and _DATA_IMAGE.match(url):
        return f"![{markdown_text(alt)}]({url})"
    return markdown_image(alt, url)

"""`--open`: show the delivered video with whatever this machine views videos with.

A local file goes to the desktop's opener (``xdg-open`` on Linux and BSD, ``open`` on
macOS, the default app on Windows); an ``s3://`` object to the browser (Python's
``webbrowser``, which honours ``$BROWSER``) as a presigned URL. The viewer is started
in the background, so the command returns at once; where there is none, the message
says so and how to look at the video instead. Never a failure: the video is delivered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# A presigned URL handed to the browser works this long.
OPEN_URL_SECONDS = 3600


def desktop_opener() -> str | None:
    """The command that opens a file with its default application here, if there is one."""
    return shutil.which("open" if sys.platform == "darwin" else "xdg-open")


def open_video(uri: str, *, s3: Any = None) -> tuple[bool, str]:
    """Open the video at ``uri``; (opened?, a line for the person)."""
    if uri.startswith("s3://"):
        import webbrowser

        from ..core.storage.destinations import presign

        url = presign(uri, OPEN_URL_SECONDS, s3)
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
        if opened:
            return True, f"opened {uri} in the browser (a presigned URL, valid for an hour)"
        return False, (f"no browser found to open {uri} (set $BROWSER); its presigned URL, valid for an hour: {url}")
    path = Path(uri)
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        os.startfile(path)  # type: ignore[attr-defined,unused-ignore]
        return True, f"opened {path} with its default application"
    opener = desktop_opener()
    if opener is None:
        wanted = "open" if sys.platform == "darwin" else "xdg-open (apt-get install xdg-utils)"
        return False, f"no viewer to open {path}: {wanted} is not installed; the video is at {path}"
    subprocess.Popen(
        [opener, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the viewer outlives this command and its terminal's Ctrl-C
    )
    return True, f"opened {path} with {Path(opener).name}"

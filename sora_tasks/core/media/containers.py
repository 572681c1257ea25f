"""Is a file the MP4 it claims to be? Its container is demuxed, not judged by its first bytes.

A server (or an ``s3://`` source) that answers with ``....ftyp`` and nothing else, or with
an HTML page, would otherwise be "delivered". PyAV opens the file, finds a video stream and
reads packets until one holds data: a few kilobytes read, nothing decoded.
"""

from __future__ import annotations

from pathlib import Path

# FFmpeg's demuxer for MP4, MOV, M4V, 3GP.
MP4_FORMATS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"})


def mp4_problem(path: Path) -> str | None:
    """None when ``path`` is an MP4 with a video stream that holds data; else what is wrong with it."""
    import av
    import av.error

    try:
        with av.open(str(path)) as container:
            names = set(container.format.name.split(","))
            if not names & MP4_FORMATS:
                return f"its container is {container.format.name}, not MP4"
            if not container.streams.video:
                return "it has no video stream"
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    return None
            return "its video stream holds no data"
    except (av.error.FFmpegError, OSError, ValueError) as error:
        return f"it cannot be read as MP4 ({error})"

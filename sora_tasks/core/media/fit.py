"""How a reference image is fitted to the video's size: the request's ``fit`` field.

Apart from :mod:`.images` so that checking a request does not import Pillow.
"""

from __future__ import annotations

from typing import Literal

# cover crops, contain pads, stretch distorts.
Fit = Literal["cover", "contain", "stretch"]
FITS: tuple[Fit, ...] = ("cover", "contain", "stretch")

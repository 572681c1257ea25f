"""What a batch will cost, before anything is paid for.

Prices are dollars per second of video. The defaults are OpenAI's list prices for
the Sora API; pass your own table for other servers or negotiated rates. A key
``"model@size"`` overrides ``"model"`` (sora-2-pro costs more at 1024p).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .request import VideoRequest

DEFAULT_PRICES: dict[str, float] = {
    "sora-2": 0.10,
    "sora-2-pro": 0.30,
    "sora-2-pro@1024x1792": 0.50,
    "sora-2-pro@1792x1024": 0.50,
}


def price_per_second(request: VideoRequest, prices: Mapping[str, float] | None = None) -> float | None:
    table = DEFAULT_PRICES if prices is None else prices
    base_model = request.model
    for dated in ("-2025-10-06", "-2025-12-08"):
        base_model = base_model.removesuffix(dated)
    for key in (f"{request.model}@{request.size}", f"{base_model}@{request.size}", request.model, base_model):
        if key in table:
            return float(table[key])
    return None


def estimate_cost(
    requests: Iterable[VideoRequest], prices: Mapping[str, float] | None = None
) -> tuple[float, list[str]]:
    """Total dollars, and the models that had no price (counted as free)."""
    total, unpriced = 0.0, []
    for request in requests:
        price = price_per_second(request, prices)
        if price is None:
            unpriced.append(request.model)
        else:
            total += price * int(request.seconds)
    return round(total, 4), sorted(set(unpriced))

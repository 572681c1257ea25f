"""`sora-emulator`: run the Sora-compatible Videos API emulator as a server."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from .app import build_app, wrap_with_gateway
from .faults import FaultPlan
from .server import bind_socket
from .state import EmulatorConfig, EmulatorState


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-emulator",
        description=(
            "A local server that speaks OpenAI's Videos API (POST /v1/videos, GET /v1/videos/{id}, "
            "GET /v1/videos/{id}/content, list, delete, remix) and renders real H.264 MP4s. "
            "Point any OpenAI SDK program at it with OPENAI_BASE_URL=http://HOST:PORT/v1."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--render-seconds", type=float, default=2.0, help="time from create to completed (default: %(default)s)"
    )
    parser.add_argument("--poll-after-ms", type=int, default=500, help="openai-poll-after-ms sent while a job runs")
    parser.add_argument("--asset-ttl", type=float, default=3600.0, help="seconds a completed video stays downloadable")
    parser.add_argument("--api-key", help="accept only this bearer key (default: any non-empty key)")
    parser.add_argument(
        "--pad-bytes", type=int, default=0, help="grow each MP4 by a valid `free` box of this many bytes"
    )
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request to this file")
    parser.add_argument(
        "--reuse-renders",
        action="store_true",
        help="encode one video per size/duration and serve it to every such job (load tests)",
    )
    faults = parser.add_argument_group("fault injection (fractions are probabilities in 0..1)")
    faults.add_argument("--rate-limit", type=float, default=0.0, help="fraction of requests answered 429")
    faults.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429")
    faults.add_argument("--server-error", type=float, default=0.0, help="fraction answered 500 or 503")
    faults.add_argument("--reset", type=float, default=0.0, help="fraction of requests dropped without an answer")
    faults.add_argument("--cut-download", type=float, default=0.0, help="fraction of downloads cut off mid-body")
    faults.add_argument(
        "--create-then-500", type=float, default=0.0, help="fraction of creates that commit the job, then 500"
    )
    faults.add_argument(
        "--moderate",
        action="append",
        default=[],
        metavar="WORD",
        help="fail jobs whose prompt contains WORD with moderation_blocked (repeatable)",
    )
    faults.add_argument("--slow", type=float, default=0.0, help="delay every response by this many seconds")
    faults.add_argument("--seed", type=int, default=0, help="seed for the fault draws")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = EmulatorConfig(
        render_seconds=args.render_seconds,
        poll_after_ms=args.poll_after_ms,
        asset_ttl_seconds=args.asset_ttl,
        pad_bytes=args.pad_bytes,
        api_key=args.api_key,
        request_log=args.request_log,
        reuse_renders=args.reuse_renders,
    )
    faults = FaultPlan(
        rate_limit=args.rate_limit,
        retry_after_seconds=args.retry_after,
        server_error=args.server_error,
        reset=args.reset,
        cut_download=args.cut_download,
        create_then_500=args.create_then_500,
        moderation_words=tuple(args.moderate),
        slow=1.0 if args.slow > 0 else 0.0,
        slow_seconds=args.slow,
        seed=args.seed,
    )
    state = EmulatorState(config=config, faults=faults)
    print(f"Sora emulator on http://{args.host}:{args.port}/v1 (set OPENAI_BASE_URL to this)", flush=True)
    server = uvicorn.Server(uvicorn.Config(wrap_with_gateway(build_app(state), state), log_level="info"))
    try:
        server.run(sockets=[bind_socket(args.host, args.port)])
    finally:
        state.close()


if __name__ == "__main__":
    main()

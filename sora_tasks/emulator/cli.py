"""`sora-emulator`: run the Sora-compatible Videos API emulator as a server."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from .app import build_app, wrap_with_gateway
from .faults import DEFECT_KINDS, FaultPlan
from .server import bind_socket
from .state import EmulatorConfig, EmulatorState


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-emulator",
        description=(
            "A local server that speaks OpenAI's Videos API (POST /v1/videos, GET /v1/videos/{id}, "
            "GET /v1/videos/{id}/content, list, delete, remix, edits, extensions, characters; and "
            "POST /v1/files for input_reference file ids) and renders real H.264 MP4s. "
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
        "--idle-exit",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="exit after this many seconds without a request (default: 0, never)",
    )
    parser.add_argument(
        "--url-file",
        type=Path,
        metavar="PATH",
        help="once listening, write the base URL (with the real port, for --port 0) to PATH",
    )
    parser.add_argument(
        "--reuse-renders",
        action="store_true",
        help="encode one video per size/duration and serve it to every such job (load tests)",
    )
    parser.add_argument(
        "--hosted-shutdown",
        action="store_true",
        help=(
            "answer every videos endpoint 404 'Invalid URL (POST /v1/videos)', as api.openai.com does "
            "once the hosted Sora API is shut down (clients' configuration errors)"
        ),
    )
    parser.add_argument(
        "--fetch-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long a create may take to fetch an input_reference image_url (default: %(default)s)",
    )
    faults = parser.add_argument_group("fault injection (fractions are probabilities in 0..1)")
    faults.add_argument("--rate-limit", type=float, default=0.0, help="fraction of requests answered 429")
    faults.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429")
    faults.add_argument("--server-error", type=float, default=0.0, help="fraction answered 500 or 503")
    faults.add_argument("--reset", type=float, default=0.0, help="fraction of requests dropped without an answer")
    faults.add_argument("--cut-download", type=float, default=0.0, help="fraction of downloads cut off mid-body")
    faults.add_argument(
        "--create-then-500",
        type=float,
        default=0.0,
        help="fraction of job-making requests (create, remix, edit, extend) that commit the job, then 500",
    )
    faults.add_argument(
        "--moderate",
        action="append",
        default=[],
        metavar="WORD",
        help="fail jobs whose prompt contains WORD with moderation_blocked (repeatable)",
    )
    faults.add_argument(
        "--defect",
        action="append",
        default=[],
        choices=DEFECT_KINDS,
        help="render every video with this defect, still reported completed: black frames, frozen (one still "
        "frame), short (half the frames), size (half the size), silent (a silent audio track); repeatable. "
        "A prompt containing [fault:KIND] gets it too",
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
        hosted_shutdown=args.hosted_shutdown,
        fetch_timeout_seconds=args.fetch_timeout,
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
        defects=tuple(args.defect),
    )
    state = EmulatorState(config=config, faults=faults)
    server = uvicorn.Server(uvicorn.Config(wrap_with_gateway(build_app(state), state), log_level="info"))
    _stop_cleanly_on_signals(server)
    try:
        sock = bind_socket(args.host, args.port)
        # Listen now, not when uvicorn starts: a client that read the URL file is queued, not refused.
        sock.listen()
        base_url = f"http://{args.host}:{sock.getsockname()[1]}/v1"
        print(f"Sora emulator on {base_url} (set OPENAI_BASE_URL to this)", flush=True)
        if args.url_file is not None:
            _write_atomically(args.url_file, base_url)
        if args.idle_exit > 0:
            threading.Thread(
                target=_exit_when_idle, args=(server, state, args.idle_exit), name="sora-emulator-idle", daemon=True
            ).start()
        server.run(sockets=[sock])
    finally:
        state.close()


def _stop_cleanly_on_signals(server: uvicorn.Server) -> None:
    """SIGINT and SIGTERM end the process through `finally`, so `state.close()` stops the render workers.

    uvicorn handles both while it serves, and once it has stopped it raises the signal
    again; with the default handler that killed the process before `state.close()`.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        if not server.should_exit:  # uvicorn is not serving yet: stop here
            raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)


def _write_atomically(path: Path, text: str) -> None:
    # A parent polling for the file must never read it half-written.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _exit_when_idle(server: uvicorn.Server, state: EmulatorState, seconds: float) -> None:
    while not server.should_exit:
        idle = time.monotonic() - state.last_request_at
        if idle >= seconds and state.requests_in_flight == 0:
            server.should_exit = True
            return
        time.sleep(min(0.5, max(0.05, seconds - idle)))


if __name__ == "__main__":
    main()

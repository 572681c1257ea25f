"""`sora-video`: generate, submit, check and collect Sora videos from a shell.

    sora-video --prompt "A fox in the snow" --output fox.mp4
    sora-video --prompt "..." --async --output x.mp4  # prints the video id, records it
    sora-video status VIDEO_ID
    sora-video collect VIDEO_ID --output s3://bucket/videos/{video_id}.mp4
    sora-video pending                                # deliver every recorded video that is done

Exit status: 0 delivered, 2 invalid input (nothing was paid for), 1 generation or
delivery failed (the message carries the video id so the job can be recovered).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
SUBCOMMANDS = ("status", "collect", "pending", "providers")
EMULATOR_KEY = "sk-emulator"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="Videos API base URL (default: $OPENAI_BASE_URL or api.openai.com)")
    parser.add_argument(
        "--api-key-secret", help="name of a Prefect Secret block holding the API key (default: $OPENAI_API_KEY)"
    )
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="use the built-in local emulator (the default when OPENAI_API_KEY is not set)",
    )
    parser.add_argument(
        "--provider",
        help="server kind: openai, litellm, vllm-omni, sglang, generic, or auto to ask the server "
        "(default: openai for api.openai.com, generic otherwise; `sora-video providers` lists them)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect's run logs")


def parse_extra(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is read as JSON when it parses (numbers, booleans), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video",
        description="Turn a prompt (and optionally a reference image) into an MP4 on disk or in S3. "
        "Other commands: `sora-video status ID`, `sora-video collect ID --output ...`.",
    )
    parser.add_argument("--prompt", required=True, help="what the video shows")
    parser.add_argument("--image", help="reference image: path or s3:// URI (fitted to --resolution)")
    parser.add_argument("--model", default="sora-2", help="sora-2 (default) or sora-2-pro")
    parser.add_argument("--duration", default="4", help="seconds: 4, 8 or 12 (default: 4)")
    parser.add_argument(
        "--resolution",
        default="1280x720",
        help="720x1280 or 1280x720; sora-2-pro also 1024x1792, 1792x1024 (default: 1280x720)",
    )
    parser.add_argument(
        "--output",
        default="videos/{video_id}.mp4",
        help="local path or s3://bucket/key; may use {video_id}, {date}, {model} (default: %(default)s)",
    )
    parser.add_argument("--fit", default="cover", choices=("cover", "contain", "stretch"), help="how --image is fitted")
    parser.add_argument(
        "--async", dest="submit_only", action="store_true", help="submit and print the video id without waiting"
    )
    parser.add_argument("--max-wait", type=float, default=1200.0, help="seconds to wait for the video (default: 1200)")
    parser.add_argument(
        "--extra",
        type=parse_extra,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a create field the provider accepts, e.g. --extra seed=7 (repeatable; see `sora-video providers`)",
    )
    parser.add_argument("--thumbnail", action="store_true", help="also deliver the thumbnail next to the video")
    parser.add_argument("--request-id", help="makes an identical request a new, separately paid job")
    parser.add_argument(
        "--ledger",
        help="with --async: where the job is recorded for `sora-video pending` / the collect-pending "
        "deployment (default: $SORA_LEDGER or ~/.prefect-sora/pending)",
    )
    _common(parser)
    return parser


def status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sora-video status", description="Print a video's status as JSON.")
    parser.add_argument("video_id")
    _common(parser)
    return parser


def collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sora-video collect", description="Deliver a completed video.")
    parser.add_argument("video_id")
    parser.add_argument("--output", default="videos/{video_id}.mp4", help="local path or s3://bucket/key")
    _common(parser)
    return parser


def pending_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video pending", description="Deliver every recorded (--async) video that has finished."
    )
    parser.add_argument("--ledger", help="ledger folder or s3://bucket/prefix (default: $SORA_LEDGER)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect's run logs")
    return parser


def _quiet_prefect(verbose: bool) -> None:
    # Set before Prefect is imported: its settings are read once.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@contextlib.contextmanager
def backend(args: argparse.Namespace) -> Iterator[tuple[str | None, bool]]:
    """Yield (base URL, embedded?): the embedded emulator runs when asked or when no key is set."""
    use_emulator = args.emulator or (
        not args.base_url and not os.environ.get("OPENAI_API_KEY") and not args.api_key_secret
    )
    if not use_emulator:
        yield args.base_url, False
        return
    if not args.emulator:
        print(
            "OPENAI_API_KEY is not set: using the built-in Sora emulator (local, free, synthetic video). "
            "Set OPENAI_API_KEY or --base-url for real generation.",
            file=sys.stderr,
        )
    from .emulator import EmulatorConfig, run_emulator

    with run_emulator(EmulatorConfig(render_seconds=3.0, poll_after_ms=250)) as emulator:
        os.environ["OPENAI_API_KEY"] = EMULATOR_KEY
        yield emulator.base_url, True


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .core import progress as feed

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        transient=True,
        console=_stderr_console(),
    ) as bar:
        bar_task = bar.add_task("starting", total=100)

        def update(video: Any) -> None:
            bar.update(bar_task, completed=video.progress, description=f"{video.id} {video.status}")

        unsubscribe = feed.subscribe(update)
        try:
            yield
        finally:
            unsubscribe()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def default_ledger() -> str:
    from .core.ledger import default_location

    return default_location()


def check_request(args: argparse.Namespace) -> None:
    """Reject bad input before starting Prefect or the emulator (and before any paid call)."""
    from .core.client import resolve_base_url
    from .core.providers import resolve_profile
    from .core.storage import validate_output

    # Without --base-url the job runs on OpenAI or the emulator: OpenAI's table applies.
    provider = args.provider if args.base_url else (args.provider or "openai")
    if provider == "auto" and not args.base_url:
        provider = "openai"
    profile = resolve_profile(provider, resolve_base_url(args.base_url))
    profile.build_request(
        args.prompt, model=args.model, duration=args.duration, resolution=args.resolution, extra=dict(args.extra)
    )
    validate_output(args.output)


def run_generate(args: argparse.Namespace) -> int:
    check_request(args)
    from flows.generate import generate_video
    from flows.manual import submit_video

    with backend(args) as (base_url, embedded):
        common = {
            "prompt": args.prompt,
            "image": args.image,
            "model": args.model,
            "duration": args.duration,
            "resolution": args.resolution,
            "fit": args.fit,
            "base_url": base_url,
            "api_key_secret": args.api_key_secret,
            "request_id": args.request_id,
            "provider": args.provider,
            "extra_fields": dict(args.extra) or None,
        }
        if args.submit_only:
            # An embedded emulator's jobs end with this process: nothing to record.
            ledger = None if embedded else (args.ledger or default_ledger())
            submitted = submit_video(output=args.output, ledger=ledger, **common)
            if embedded:
                print("note: the embedded emulator stops with this command; its jobs go with it", file=sys.stderr)
            else:
                print(
                    f"submitted; `sora-video pending` (or the collect-pending deployment) delivers it to {args.output}",
                    file=sys.stderr,
                )
            print(submitted.video_id)
            return EXIT_OK
        with progress_bar(sys.stderr.isatty()):
            result = generate_video(output=args.output, max_wait=args.max_wait, thumbnail=args.thumbnail, **common)
        print(result.uri)
        return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from flows.manual import video_status

    with backend(args) as (base_url, _):
        status = video_status(
            args.video_id, base_url=base_url, api_key_secret=args.api_key_secret, provider=args.provider
        )
        print(json.dumps(status, indent=2))
    return EXIT_OK


def run_collect(args: argparse.Namespace) -> int:
    from flows.manual import collect_video

    with backend(args) as (base_url, _):
        result = collect_video(
            args.video_id,
            output=args.output,
            base_url=base_url,
            api_key_secret=args.api_key_secret,
            provider=args.provider,
        )
    print(result.uri)
    return EXIT_OK


def run_pending(args: argparse.Namespace) -> int:
    from flows.deferred import collect_pending

    rows = collect_pending(ledger=args.ledger)
    for row in rows:
        print(f"{row['video_id']}\t{row['outcome']}\t{row['detail']}")
    return EXIT_FAILED if any(row["outcome"] in ("failed", "expired", "missing") for row in rows) else EXIT_OK


def print_providers() -> None:
    from .core.providers import PROFILES

    for profile in PROFILES.values():
        models = ", ".join(profile.models) if profile.models else "any (passed through)"
        flags = (("variants", profile.supports_variants), ("list", profile.supports_list))
        supports = [name for name, flag in (*flags, ("delete", profile.supports_delete)) if flag]
        print(f"{profile.name}: {profile.description}")
        print(f"  --base-url {profile.example_base_url} --model {profile.example_model}")
        print(f"  models: {models}; seconds: {', '.join(profile.seconds or ('any',))} (sent as {profile.seconds_type})")
        print(f"  supports: {', '.join(supports) or 'create, status and the video only'}")
        if profile.extra_fields:
            print(f"  --extra fields: {', '.join(profile.extra_fields)}")
        if profile.price_per_second:
            prices = ", ".join(f"{model} ${price:.2f}/s" for model, price in profile.price_per_second.items())
            print(f"  prices: {prices}")
        if profile.notes:
            print(f"  note: {profile.notes}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "generate"
    if command == "providers":
        print_providers()
        return EXIT_OK
    parser = {
        "generate": generate_parser,
        "status": status_parser,
        "collect": collect_parser,
        "pending": pending_parser,
    }[command]()
    args = parser.parse_args(argv[1:] if command != "generate" else argv)
    _quiet_prefect(args.verbose)
    from .core.errors import SoraError

    runner = {"generate": run_generate, "status": run_status, "collect": run_collect, "pending": run_pending}[command]
    try:
        return runner(args)
    except ValueError as error:
        print(f"sora-video: invalid input: {error}", file=sys.stderr)
        return EXIT_INVALID
    except (SoraError, RuntimeError, TimeoutError) as error:
        video_id = getattr(error, "video_id", None)
        code = getattr(error, "code", None)
        details = ", ".join(
            part for part in (f"video {video_id}" if video_id else "", f"code {code}" if code else "") if part
        )
        print(f"sora-video: failed{f' ({details})' if details else ''}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""`sora-video`: generate, submit, check and collect Sora videos from a shell.

Input is checked before anything starts; the run then goes to the plain core or, when a
Prefect API is configured, to a Prefect flow run (see ``backend``). Errors are one line
(``-v`` adds the traceback); exit status 0 done, 2 invalid input, 1 failed.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import parsers

if TYPE_CHECKING:
    from ..core.api.providers import ProviderProfile
    from ..core.jobs.derived import DerivedOperation

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
SUBCOMMANDS = (
    "status",
    "collect",
    "pending",
    "providers",
    "up",
    "down",
    "ps",
    "remix",
    "edit",
    "extend",
    "character",
    "storyboard",
    "takes",
)


def _target(args: argparse.Namespace) -> tuple[Any, bool]:
    """(target, prefect?): Prefect is set up before anything imports it (a block load does)."""
    from . import backend

    prefect = backend.use_prefect(args)
    if prefect:
        backend.prepare_prefect(args.verbose)
    return backend.choose_target(args), prefect


def open_delivered(args: argparse.Namespace, uri: str) -> None:
    """``--open``: the delivered video in the system's viewer; a clear line when there is none."""
    from .viewer import open_video

    s3 = None
    if uri.startswith("s3://") and args.destination_block:
        from ..blocks import load_bucket, presigning_client

        s3 = presigning_client(load_bucket(args.destination_block))  # its credentials sign the URL
    opened, message = open_video(uri, s3=s3)
    if not opened or not args.quiet:
        print(f"sora-video: {message}" if not opened else message, file=sys.stderr)


def run_generate(args: argparse.Namespace) -> int:
    from . import backend, checks
    from .display import Reporter, choose_mode

    if args.submit_only and args.open:
        from ..core.errors import InvalidRequestError

        raise InvalidRequestError("--open shows a delivered video: it cannot be combined with --async")
    target, prefect = _target(args)
    target = target.with_max_wait(args.max_wait)
    spec, request, image = checks.check_generate(args, target)
    if args.submit_only:
        from ..core.storage.ledger import Ledger

        Ledger(args.ledger)  # a malformed ledger location is bad input, found now
    target = backend.start(target, quiet=args.quiet)
    reporter = Reporter(choose_mode(quiet=args.quiet))
    if args.submit_only:
        if prefect:
            from . import orchestrated

            video_id = orchestrated.submit(args, target, spec)
        else:
            from . import local

            video_id = local.submit(args, target, spec, request, image)
        reporter.say(
            f"submitted {video_id}: `sora-video pending` delivers it to {args.output} once done "
            f"(or `sora-video collect {video_id} --output ...`; `sora-video status {video_id}` shows progress)"
        )
        print(video_id)
        return EXIT_OK
    with reporter:
        if prefect:
            from . import orchestrated

            uri = orchestrated.generate(args, target, spec, reporter)
        else:
            from . import local

            uri = local.generate(args, target, spec, request, image, reporter)
    print(uri, flush=True)
    if args.open:
        open_delivered(args, uri)
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from . import backend, checks

    checks.check_video_id(args.video_id)
    target, prefect = _target(args)
    target = backend.start(target, quiet=args.quiet)
    if prefect:
        from . import orchestrated

        print(orchestrated.status(args, target))
    else:
        from . import local

        print(local.status(args, target))
    return EXIT_OK


def run_collect(args: argparse.Namespace) -> int:
    from . import backend, checks
    from .display import Reporter, choose_mode

    checks.check_video_id(args.video_id)
    target, prefect = _target(args)
    checks.check_output(args.output, args.destination_block)
    target = backend.start(target, quiet=args.quiet)
    with Reporter(choose_mode(quiet=args.quiet)) as reporter:
        if prefect:
            from . import orchestrated

            uri = orchestrated.collect(args, target, reporter)
        else:
            from . import local

            uri = local.collect(args, target, reporter)
    print(uri, flush=True)
    if args.open:
        open_delivered(args, uri)
    return EXIT_OK


def run_derive(operation: DerivedOperation, args: argparse.Namespace) -> int:
    """``remix``, ``edit``, ``extend``: checked, then delivered like the default command."""
    from . import backend, checks
    from .display import Reporter, choose_mode

    target, prefect = _target(args)
    target = target.with_max_wait(args.max_wait)
    checks.check_derive(operation, args, target)
    target = backend.start(target, quiet=args.quiet)
    with Reporter(choose_mode(quiet=args.quiet)) as reporter:
        if prefect:
            from . import orchestrated

            uri = orchestrated.derive(args, target, operation, reporter)
        else:
            from . import local

            uri = local.derive(args, target, operation, reporter)
    print(uri)
    return EXIT_OK


def run_storyboard(args: argparse.Namespace) -> int:
    from . import backend, checks
    from .display import Reporter, choose_mode

    target, prefect = _target(args)
    target = target.with_max_wait(args.max_wait)
    story = checks.read_storyboard(args)
    board, image = checks.check_storyboard(story, args, target)
    target = backend.start(target, quiet=args.quiet)
    reporter = Reporter(choose_mode(quiet=args.quiet))
    reporter.say(f"storyboard: {board.count} shots, {board.total_seconds} s in all")
    with reporter:
        if prefect:
            from . import orchestrated

            uri = orchestrated.storyboard(args, target, story, reporter)
        else:
            from . import local

            uri = local.storyboard(args, target, board, image, reporter)
    print(uri)
    return EXIT_OK


def run_takes(args: argparse.Namespace) -> int:
    """Several takes; the person keeps one here (a terminal) or in the Prefect UI; only the pick is delivered."""
    from ..core.errors import InvalidRequestError
    from ..core.jobs.review import check_review
    from . import backend, checks
    from .takes import no_one_to_ask, on_a_terminal, say

    check_review(args.takes, args.timeout, args.on_timeout, args.max_rounds)
    target, prefect = _target(args)
    interactive = on_a_terminal()
    if not interactive and not prefect:
        raise InvalidRequestError(no_one_to_ask())  # before anything starts or is paid
    target = target.with_max_wait(args.max_wait)
    spec, request, image = checks.check_generate(args, target)
    target = backend.start(target, quiet=args.quiet)
    if prefect:
        from . import orchestrated

        uri, message = orchestrated.takes(args, target, spec, interactive=interactive)
    else:
        from . import local

        uri, message = local.takes(args, target, spec, request, image)
    if not args.quiet:
        say(message)
    if uri:
        print(uri, flush=True)
    return EXIT_OK


def run_character(args: argparse.Namespace) -> int:
    from . import backend, checks

    target, prefect = _target(args)
    checks.check_character(args, target)
    target = backend.start(target, quiet=args.quiet)
    if prefect:
        from . import orchestrated

        print(orchestrated.character(args, target))
    else:
        from . import local

        print(local.character(args, target))
    return EXIT_OK


def run_pending(args: argparse.Namespace) -> int:
    from ..core.jobs.sweep import FAILED_OUTCOMES, summary
    from ..core.storage.ledger import Ledger
    from . import backend

    book = Ledger(args.ledger)
    records = book.pending()
    if not records:
        if not args.quiet:
            print(f"nothing pending in {book.location}", file=sys.stderr)
        return EXIT_OK
    # The sweep's own server (flags, env, a block, or the emulator): records made on another
    # server are skipped and reported, never sent this key.
    target = backend.start(backend.choose_target(args), quiet=args.quiet)
    # Records made by flow runs may name Prefect blocks, which only Prefect can read.
    needs_prefect = any(record.api_block or record.destination_block for record in records)
    if (needs_prefect and not args.local) or backend.use_prefect(args) or target.api_block:
        from . import orchestrated

        backend.prepare_prefect(args.verbose)
        rows = orchestrated.pending(book, target, previews=args.previews, outputs=args.outputs)
    else:
        from . import local

        rows = local.pending(book, target, previews=args.previews, outputs=args.outputs)
    for row in rows:
        print(f"{row['video_id']}\t{row['outcome']}\t{row['detail']}")
    if not args.quiet:
        print(f"{summary(rows)} ({book.location})", file=sys.stderr)
    return EXIT_FAILED if any(row["outcome"] in FAILED_OUTCOMES for row in rows) else EXIT_OK


def run_up(args: argparse.Namespace) -> int:
    from . import services

    emulator = services.ensure_emulator(on_demand=False, render_seconds=args.render_seconds)
    print(emulator.describe())
    if args.prefect:
        server = services.ensure_prefect_server(args.port)
        print(server.describe())
        print(
            f"sora-video calls now run as flow runs on it; UI at {server.url.removesuffix('/api')}. "
            f"Other Prefect tools: export PREFECT_API_URL={server.url}",
            file=sys.stderr,
        )
    return EXIT_OK


def run_down(args: argparse.Namespace) -> int:
    from . import services

    stopped = [service for name in ("prefect", "emulator") if (service := services.stop(name))]
    for service in stopped:
        print(f"stopped {service.name} (pid {service.pid})")
    if not stopped:
        print("nothing was running", file=sys.stderr)
    return EXIT_OK


def run_ps(args: argparse.Namespace) -> int:
    from . import services

    found = [service for name in ("emulator", "prefect") if (service := services.running(name))]
    for service in found:
        print(service.describe())
    if not found:
        print("no background services (a keyless call starts the emulator; `sora-video up` starts it now)")
    return EXIT_OK


def run_providers(args: argparse.Namespace) -> int:
    from ..core.api.providers import PROFILES

    for profile in PROFILES.values():
        models = ", ".join(profile.models) if profile.models else "any (passed through)"
        flags = (("variants", profile.supports_variants), ("list", profile.supports_list))
        supports = [name for name, flag in (*flags, ("delete", profile.supports_delete)) if flag]
        print(f"{profile.name}: {profile.description}")
        print(f"  --base-url {profile.example_base_url} --model {profile.example_model}")
        print(f"  models: {models}; seconds: {', '.join(profile.seconds or ('any',))} (sent as {profile.seconds_type})")
        print(f"  supports: {', '.join(supports) or 'create, status and the video only'}")
        print(f"  operations: {operations_line(profile)}")
        if profile.extra_fields:
            print(f"  --extra fields: {', '.join(profile.extra_fields)}")
        if profile.price_per_second:
            prices = ", ".join(f"{model} ${price:.2f}/s" for model, price in profile.price_per_second.items())
            print(f"  prices: {prices}")
        if profile.notes:
            print(f"  note: {profile.notes}")
    return EXIT_OK


def operations_line(profile: ProviderProfile) -> str:
    """The optional operations a profile serves, and for those that start from a video, how it is given."""
    from ..core.api.providers import OPERATIONS, VIDEO_OPERATIONS

    served = []
    for name in OPERATIONS:
        if not profile.supports(name):
            continue
        if name in VIDEO_OPERATIONS:
            ways = [
                way for way, kinds in (("id", profile.video_ids), ("upload", profile.video_uploads)) if name in kinds
            ]
            served.append(f"{name} ({' or '.join(ways)})" if ways else name)
        else:
            served.append(name)
    return ", ".join(served) or "none (create only)"


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "generate": (parsers.generate_parser, run_generate),
    "status": (parsers.status_parser, run_status),
    "collect": (parsers.collect_parser, run_collect),
    "pending": (parsers.pending_parser, run_pending),
    "providers": (lambda: argparse.ArgumentParser(prog="sora-video providers"), run_providers),
    "up": (parsers.up_parser, run_up),
    "down": (parsers.down_parser, run_down),
    "ps": (parsers.ps_parser, run_ps),
    "remix": (parsers.remix_parser, lambda args: run_derive("remix", args)),
    "edit": (parsers.edit_parser, lambda args: run_derive("edit", args)),
    "extend": (parsers.extend_parser, lambda args: run_derive("extend", args)),
    "character": (parsers.character_parser, run_character),
    "storyboard": (parsers.storyboard_parser, run_storyboard),
    "takes": (parsers.takes_parser, run_takes),
}


def _describe_failure(error: BaseException) -> str:
    video_id = getattr(error, "video_id", None)
    code = getattr(error, "code", None)
    details = ", ".join(
        part for part in (f"video {video_id}" if video_id else "", f"code {code}" if code else "") if part
    )
    return f"failed{f' ({details})' if details else ''}: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "generate"
    build_parser, runner = COMMANDS[command]
    args = build_parser().parse_args(argv[1:] if command != "generate" else argv)
    verbose = getattr(args, "verbose", False)
    try:
        if getattr(args, "quality", None) is not None:
            from .checks import check_quality

            args.quality = check_quality(args.quality)
        return runner(args)
    except KeyboardInterrupt:
        print("sora-video: interrupted; a submitted video keeps rendering (`sora-video pending`)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if verbose:
            traceback.print_exc()
        from ..core.errors import InvalidRequestError, SoraError

        # Exit 2 means nothing was sent: our own checks (and pydantic's) refuse before any
        # request. A server's refusal (400, 401, 403, 422) is a ValueError too, but it
        # answered a request that was sent: that is a failure (exit 1).
        refused_here = isinstance(error, InvalidRequestError) or (
            isinstance(error, ValueError) and not isinstance(error, SoraError)
        )
        if refused_here and not getattr(error, "video_id", None):
            print(f"sora-video: invalid input (nothing was sent): {error}", file=sys.stderr)
            return EXIT_INVALID
        print(f"sora-video: {_describe_failure(error)}", file=sys.stderr)
        if not verbose:
            print("sora-video: add -v for the full log and traceback", file=sys.stderr)
        return EXIT_FAILED

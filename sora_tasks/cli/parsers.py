"""The command line's words: one parser per command, sharing the connection and display flags."""

from __future__ import annotations

import argparse
import json
from typing import Any

COMMANDS = """commands:
  sora-video --prompt TEXT [--output PATH|s3://...]   generate and deliver one video (waits)
  sora-video --prompt TEXT --async --output ...        submit, print the id, return at once
  sora-video status VIDEO_ID                           a video's status as JSON
  sora-video collect VIDEO_ID --output ...             deliver a finished video
  sora-video pending                                   deliver every finished --async video
  sora-video remix VIDEO_ID --prompt TEXT --output ... a new video from a finished one
  sora-video edit SOURCE --prompt TEXT --output ...    SOURCE (video id, .mp4, s3://...mp4) edited
  sora-video extend SOURCE --prompt TEXT --seconds N   SOURCE followed by N more seconds (4-20)
  sora-video character create --name N --video SOURCE  a reusable character (JSON); `character show ID`
  sora-video storyboard FILE --output ...              one video from shot prompts (a line each, or JSON)
  sora-video takes --takes 3 --prompt TEXT --output ... several takes; keep one (number), remix (r N), reject (x)
  sora-video up [--prefect] | down | ps                background emulator and Prefect server
  sora-video providers                                 the /v1/videos servers it knows

Without OPENAI_API_KEY (or --base-url) it runs on a local emulator: free, synthetic video.
Every finished video is checked before it is stored (--quality fail|warn|off|retry=N).
Exit status: 0 done, 2 invalid input (nothing was sent or paid), 1 generation, delivery or
the quality check failed (the message names the video id, so the job can be recovered)."""


def _connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--base-url", help="Videos API base URL (default: $OPENAI_BASE_URL or api.openai.com)")
    group.add_argument(
        "--api-block",
        help="name of a saved VideosApi block (URL, key, provider, polling) to use instead of flags and env "
        "(default: $SORA_API_BLOCK); runs as a Prefect flow run",
    )
    group.add_argument(
        "--emulator",
        action="store_true",
        help="use the local emulator (the default when no OPENAI_API_KEY or base URL is set)",
    )
    group.add_argument(
        "--provider",
        help="server kind: openai, litellm, vllm-omni, sglang, generic, or auto to ask the server "
        "(default: openai for api.openai.com and the emulator, generic otherwise; see `sora-video providers`)",
    )
    engine = group.add_mutually_exclusive_group()
    engine.add_argument(
        "--prefect",
        action="store_true",
        help="run as a Prefect flow run (the default when a Prefect API is configured: PREFECT_API_URL, "
        "the active Prefect profile, or `sora-video up --prefect`)",
    )
    engine.add_argument("--local", action="store_true", help="run without Prefect even when an API is configured")


def _destination(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--destination-block",
        help="name of a saved prefect-aws S3Bucket block: --output is then a key inside its bucket and folder, "
        "written with its credentials (runs as a Prefect flow run)",
    )


def _display(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary (results only)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show run logs and full tracebacks")


def _open(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--open",
        action="store_true",
        help="open the delivered video with the system's viewer (xdg-open, open, or the default app; "
        "an s3:// video as a presigned URL in the browser)",
    )


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
        description="Turn a prompt (and optionally a reference image) into an MP4 on disk or in S3.",
        epilog=COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    _destination(parser)
    parser.add_argument(
        "--async", dest="submit_only", action="store_true", help="submit and print the video id without waiting"
    )
    parser.add_argument(
        "--max-wait", type=float, help="seconds to wait for the video (default: the block's, else 1200)"
    )
    parser.add_argument(
        "--extra",
        type=parse_extra,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a create field the provider accepts, e.g. --extra seed=7 (repeatable; see `sora-video providers`)",
    )
    _previews(parser)
    _open(parser)
    _quality(parser)
    parser.add_argument("--request-id", help="makes an identical request a new, separately paid job")
    parser.add_argument(
        "--ledger",
        help="with --async: where the job is recorded for `sora-video pending` / the collect-pending "
        "deployment (default: $SORA_LEDGER or ~/.prefect-sora/pending)",
    )
    _connection(parser)
    _display(parser)
    return parser


def status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sora-video status", description="Print a video's status as JSON.")
    parser.add_argument("video_id")
    _connection(parser)
    _display(parser)
    return parser


def collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video collect",
        description="Deliver a finished video (and forget its --async record, so `pending` skips it).",
    )
    parser.add_argument("video_id")
    parser.add_argument("--output", default="videos/{video_id}.mp4", help="local path or s3://bucket/key")
    _destination(parser)
    parser.add_argument("--ledger", help="the --async ledger to clear it from (default: $SORA_LEDGER)")
    _previews(parser)
    _open(parser)
    _quality(parser)
    _connection(parser)
    _display(parser)
    return parser


def pending_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video pending",
        description="Deliver every recorded (--async) video that has finished; report the rest.",
    )
    parser.add_argument("--ledger", help="ledger folder or s3://bucket/prefix (default: $SORA_LEDGER)")
    parser.add_argument(
        "--outputs",
        help="a folder or s3:// prefix the records may deliver into (default: anywhere for a local ledger; "
        "an s3:// ledger's own bucket, never a local file)",
    )
    _previews(parser)
    # The sweep's own server: a record made on any other is skipped, never sent the key.
    _connection(parser)
    _display(parser)
    return parser


def up_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video up",
        description="Start the local emulator in the background (and with --prefect a Prefect server); "
        "later calls reuse them until `sora-video down`.",
    )
    parser.add_argument("--prefect", action="store_true", help="also start `prefect server start` on 127.0.0.1")
    parser.add_argument("--port", type=int, help="the Prefect server's port (default: a free one)")
    parser.add_argument(
        "--render-seconds", type=float, default=3.0, help="emulator: time from create to completed (default: 3)"
    )
    return parser


def down_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="sora-video down", description="Stop the background emulator and server.")


def ps_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="sora-video ps", description="Show the background services.")


QUALITY_HELP = (
    "what happens to a finished video that fails the quality check (all black, frozen, too short, wrong size, "
    "...): fail (default: kept beside the output as NAME.rejected.mp4, exit 1), warn (delivered with a warning), "
    "off (not checked), retry=N (kept aside, and up to N new jobs are paid for until one passes); "
    "default: the --api-block's setting, else fail"
)


def _quality(parser: argparse.ArgumentParser) -> None:
    # Checked before anything starts (cli.checks.check_quality), like every other input.
    parser.add_argument("--quality", metavar="fail|warn|off|retry=N", help=QUALITY_HELP)


def _previews(parser: argparse.ArgumentParser) -> None:
    previews = parser.add_mutually_exclusive_group()
    previews.add_argument(
        "--no-previews",
        dest="previews",
        action="store_false",
        help="deliver the video only (default: its thumbnail and spritesheet go beside it, "
        "x.thumbnail.webp and x.spritesheet.jpg, where the server has them)",
    )
    previews.add_argument(
        "--thumbnail", dest="previews", action="store_true", help="the seed's flag: previews are on by default"
    )
    parser.set_defaults(previews=True)


def _job_flags(parser: argparse.ArgumentParser) -> None:
    """What every command that pays for a video and delivers it takes (as the default command does)."""
    parser.add_argument(
        "--output",
        default="videos/{video_id}.mp4",
        help="local path or s3://bucket/key; may use {video_id}, {date}, {model} (default: %(default)s)",
    )
    _destination(parser)
    parser.add_argument(
        "--max-wait", type=float, help="seconds to wait for the video (default: the block's, else 1200)"
    )
    _previews(parser)
    _quality(parser)
    parser.add_argument("--request-id", help="makes an identical request a new, separately paid job")
    parser.add_argument(
        "--ledger",
        help="where a video paid for but not delivered is recorded for `sora-video pending` "
        "(default: $SORA_LEDGER or ~/.prefect-sora/pending)",
    )
    _connection(parser)
    _display(parser)


SOURCE_HELP = "a video id (a video the server made), a local .mp4, or an s3://bucket/key.mp4"


def remix_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video remix", description="A new video from a finished one and a new prompt (same size and length)."
    )
    parser.add_argument("video_id", help="the finished video to remix")
    parser.add_argument("--prompt", required=True, help="what changes")
    _job_flags(parser)
    return parser


def edit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video edit", description="SOURCE edited per a prompt (same size and length), delivered."
    )
    parser.add_argument("source", help=SOURCE_HELP)
    parser.add_argument("--prompt", required=True, help="the edit")
    _job_flags(parser)
    return parser


def extend_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video extend",
        description="SOURCE followed by a new segment per a prompt: one video whose length is the sum.",
    )
    parser.add_argument("source", help=SOURCE_HELP)
    parser.add_argument("--prompt", required=True, help="what happens next")
    parser.add_argument(
        "--seconds", "--duration", dest="duration", required=True, help="the new segment's length: 4, 8, 12, 16 or 20"
    )
    _job_flags(parser)
    return parser


def character_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video character", description="Reusable characters: make one from a video, or show one."
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{create,show}")
    create = actions.add_parser("create", help="make a character from a video; prints it as JSON")
    create.add_argument("--name", required=True, help="the character's name")
    create.add_argument("--video", required=True, help=SOURCE_HELP)
    _connection(create)
    _display(create)
    show = actions.add_parser("show", help="print a character as JSON")
    show.add_argument("character_id")
    _connection(show)
    _display(show)
    return parser


def storyboard_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video storyboard",
        description="One continuous video from shot prompts: the first shot is made, then extended shot by shot. "
        "A failed run resumes on rerun from the last finished shot without paying for it again.",
        epilog="FILE: one prompt a line (blank lines and # comments skipped), or JSON: a list of prompts (or of "
        '{"prompt": ..., "duration": N}), or {"shots": [...], "image", "model", "resolution", "duration"}. '
        "Flags override the file.",
    )
    parser.add_argument("file", help="the storyboard file ('-' reads stdin)")
    parser.add_argument("--image", help="reference image for the first shot: path or s3:// URI")
    parser.add_argument("--model", help="sora-2 (default) or sora-2-pro")
    parser.add_argument(
        "--duration",
        help="each shot's seconds, or one a shot as 4,8,4 (first: 4, 8 or 12; extensions: 4-20; default 4)",
    )
    parser.add_argument("--resolution", help="the first shot's size, kept by the extensions (default 1280x720)")
    parser.add_argument("--fit", default="cover", choices=("cover", "contain", "stretch"), help="how --image is fitted")
    _job_flags(parser)
    return parser


def takes_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-video takes",
        description="Several takes of one prompt; a person keeps one (delivered to --output, the others deleted at "
        "the provider), asks for a remix of one, or rejects them all. On a terminal the takes are listed and the "
        "answer typed: a take's number, `r N <note>` (remix take N per the note), or `x`. With a Prefect API the "
        "run waits paused and the same decision can be made in the Prefect UI (its URL is printed).",
    )
    parser.add_argument("--prompt", required=True, help="what the video shows")
    parser.add_argument("--takes", type=int, default=3, help="how many takes to make (1-8; default: 3)")
    parser.add_argument("--image", help="reference image: path or s3:// URI (fitted to --resolution)")
    parser.add_argument("--model", default="sora-2", help="sora-2 (default) or sora-2-pro")
    parser.add_argument("--duration", default="4", help="seconds: 4, 8 or 12 (default: 4)")
    parser.add_argument("--resolution", default="1280x720", help="720x1280 or 1280x720 (default); see the main help")
    parser.add_argument("--fit", default="cover", choices=("cover", "contain", "stretch"), help="how --image is fitted")
    parser.add_argument(
        "--extra", type=parse_extra, action="append", default=[], metavar="KEY=VALUE", help="a create field"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each decision (default: 3600)")
    parser.add_argument(
        "--on-timeout",
        default="reject",
        choices=("reject", "first"),
        help="when nobody decided in time: deliver nothing (default) or take 1; the other takes are deleted",
    )
    parser.add_argument("--max-rounds", type=int, default=3, help="remix rounds a person may ask for (default: 3)")
    parser.add_argument(
        "--open", action="store_true", help="open each take's previews (its frames) with the system's viewer"
    )
    _job_flags(parser)
    return parser

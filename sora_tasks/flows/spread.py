"""A batch spread over Prefect workers: its rows in blocks, taken one at a time by the parent and its shards.

Nothing is copied: every shard reads the same manifest. The rows are cut into blocks of
a few rows; a participant (the parent flow run, and each flow run of the shard
deployment on whatever workers serve its pool: process, Docker, Kubernetes, ECS) takes
the next block nobody holds with a conditional put (the same claims that guard every
paid create), runs its rows, writes the block's outcomes beside the receipts and takes
another. So rows start at once in the parent, which is running already, while the shards
start; a shard that starts late takes what is left, and more workers never leave rows
waiting behind a slow one. A block whose holder died (its process gone, its flow run
Crashed) is taken over, and the claims and receipts of its rows make that pay only for
what nobody paid for. Everything a shard needs must be visible from any machine: saved
blocks (by name), and S3 for the manifest, the outputs, the images and the receipts,
unless the caller says local paths are on a shared disk. The parent writes one table of
every row.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Crashed
from prefect_aws import S3Bucket
from pydantic import BaseModel, Field

from sora_tasks.blocks import VideosApi
from sora_tasks.core.errors import InvalidRequestError
from sora_tasks.core.jobs.manifest import InvalidRow, ManifestRow
from sora_tasks.core.jobs.rows import invalid_record, row_record
from sora_tasks.core.storage.claims import Claim, Claims
from sora_tasks.core.storage.destinations import S3Client
from sora_tasks.core.storage.records import RecordStore
from sora_tasks.leases import LimitSlots
from sora_tasks.tasks import release_reserved_slot

from .delivery import saved_name

SHARD_DEPLOYMENT = "generate-videos/shard"
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# States of a run a worker has taken: no other worker will, so only its heartbeats say it lives.
TAKEN_STATES = ("PENDING", "RUNNING")
HEARTBEAT = "prefect.flow-run.heartbeat"
# A taken run silent for this many heartbeat periods is dead (one late beat is no death).
SILENT_PERIODS = 3
# The most resources one events query may name (the events API's page limit).
EVENTS_PAGE = 50
POLL_SECONDS = 2.0
END_POLL_SECONDS = 0.5
# How long a participant with no row under way waits for a render slot before it leaves the
# rows to the participants that have slots (a shard then ends; see BlockTaker).
IDLE_PATIENCE = 5.0
# Blocks' outcomes read at once when the parent gathers the table.
READ_THREADS = 16


class Spread(BaseModel):
    """How to spread a batch over workers."""

    shards: int = Field(default=2, description="How many flow runs of the shard deployment take rows (at least 1).")
    deployment: str = Field(
        default=SHARD_DEPLOYMENT, description="The shard deployment (flow/deployment), e.g. generate-videos/shard."
    )
    work_pool: str | None = Field(
        default=None, description="The work pool the shard deployment must be on (checked before anything runs)."
    )
    wait: bool = Field(default=True, description="Wait for every shard and write one table; false: return at once.")
    shared_paths: bool = Field(
        default=False, description="Local paths (manifest, outputs, images, state) are on a disk every worker sees."
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="How long the parent waits for its shards in all; then the rows not reported are named. "
        "None: the api block's max_wait for each round of max_in_flight rows of the batch, plus 10 minutes.",
    )
    parent_rows: bool = Field(
        default=True,
        description="The parent flow run takes blocks of rows too (it is running already, so rows start at once, "
        "and it finishes the blocks of a shard that died); false: only the shards run rows.",
    )
    block_rows: int | None = Field(
        default=None,
        ge=1,
        description="Rows per block a participant takes at a time. None: 1 under the api block's render limit "
        "(a row is taken with a render slot in hand), else half of max_in_flight (at least 1).",
    )
    dead_after_seconds: float | None = Field(
        default=None,
        ge=60,  # two of the shortest heartbeat periods (30 s): no shorter silence proves a death
        description="A shard a worker has taken (Pending or Running) that sends no heartbeat for this long is "
        "taken for dead (its worker or machine is gone): the parent marks it Crashed, so its blocks are taken "
        "over. None: three heartbeat periods (PREFECT_FLOWS_HEARTBEAT_FREQUENCY as the parent has it, "
        "default 180 s: 9 minutes; give the workers the same), or never when that is unset.",
    )


class ShardRows(BaseModel):
    """What the parent hands each shard: its batch, how its rows are cut in blocks, and where to start looking."""

    batch: str
    total: int = Field(ge=0, description="Row numbers 1..total, as the parent read the manifest.")
    block_rows: int = Field(ge=1)
    index: int = Field(default=1, ge=0, description="This shard's number (the parent is 0): where it starts looking.")
    of: int = Field(default=1, ge=1, description="How many participants there are, the parent included.")
    wait_for_slots: bool = Field(
        default=False,
        description="With nothing under way, wait for a render slot as long as blocks are unfinished (nobody else "
        "takes rows: the parent does not); false: end after a few seconds without one, leaving the rows to others.",
    )

    def blocks(self, state: str, client: S3Client | None) -> RowBlocks:
        ranges = row_blocks(self.total, self.block_rows)
        start = self.index * len(ranges) // self.of
        return RowBlocks(state, self.batch, client, ranges, start=start, wait_for_slots=self.wait_for_slots)


def row_blocks(total: int, size: int) -> list[tuple[int, int]]:
    """Row numbers 1..total in consecutive blocks of ``size`` (the last may be shorter)."""
    return [(first, min(first + size - 1, total)) for first in range(1, total + 1, size)]


@dataclass(frozen=True)
class Block:
    """A block of rows this run holds: number, first and last row, and its claim."""

    number: int
    first: int
    last: int
    claim: Claim


class RowBlocks:
    """A batch's blocks of rows, taken one at a time by whichever participant asks first.

    A block is taken with a claim (a conditional put, so of two participants asking at
    once one gets it) and finished by writing its rows' outcomes. A block held by a
    participant known to be gone (its process, or its flow run ended) is taken over by the
    next that asks; one held by a live participant is left to it.
    """

    def __init__(
        self,
        state: str,
        batch: str,
        client: S3Client | None,
        ranges: list[tuple[int, int]],
        *,
        start: int = 0,
        wait_for_slots: bool = False,
        want_help: Callable[[], None] | None = None,
    ) -> None:
        self.wait_for_slots = wait_for_slots  # see ShardRows.wait_for_slots
        # Called when this participant has rows it cannot start and the render limit has room.
        self.want_help = want_help
        location = f"{state.rstrip('/')}/batches/{batch}"
        self._records = RecordStore(f"{location}/blocks", client, what="row blocks")
        self._left = RecordStore(f"{location}/left", client, what="participants that left")
        self._claims = Claims(location, client)
        self.ranges = ranges
        self._order = list(range(start, len(ranges))) + list(range(0, start))
        self._looked: set[int] = set()  # asked for in this pass: done, or held by someone alive
        self._cursor = 0  # where in ``_order`` this pass has got to
        self._finished: set[int] = set()
        self._mine: dict[int, list[dict[str, Any]]] = {}  # outcomes of the blocks finished here
        self._lock = threading.Lock()

    def take(self) -> Block | None:
        """The next block nobody finished or holds (or whose holder is gone); None when none is left."""
        while True:
            with self._lock:
                while self._cursor < len(self._order) and self._order[self._cursor] in self._looked:
                    self._cursor += 1
                if self._cursor == len(self._order):
                    return None
                number = self._order[self._cursor]
                self._looked.add(number)  # asked once per pass, by one thread of this participant
            if number in self._finished:
                continue
            if self._records.get(name_of(number)) is not None:
                self._finished.add(number)
                continue
            won, claim = self._claims.take(name_of(number))
            if won:
                first, last = self.ranges[number]
                return Block(number, first, last, claim)
            if claim.fulfilled is not None:
                self._finished.add(number)  # finished, and its record about to be read

    def again(self) -> None:
        """Ask once more for every block not known finished: its holder may have died since."""
        with self._lock:
            self._looked, self._cursor = set(self._finished), 0

    def finish(self, block: Block, outcomes: list[dict[str, Any]]) -> None:
        """Record the block's outcomes, then mark its claim fulfilled: nobody takes it again."""
        self._records.put(name_of(block.number), json.dumps(outcomes))
        self._claims.fulfil(block.claim, json.dumps({"rows": [block.first, block.last]}))
        with self._lock:
            self._finished.add(block.number)
            self._mine[block.number] = outcomes

    def outcomes(self) -> dict[int, list[dict[str, Any]]]:
        """The outcomes of every finished block, by block number (those finished elsewhere read at once)."""
        with self._lock:
            found = dict(self._mine)
        others = [number for number in self._finished_names() if number not in found]

        def read(number: int) -> tuple[int, str | None]:
            return number, self._records.get(name_of(number))

        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sora-blocks") as pool:
            for number, text in pool.map(read, others):
                if text is not None:
                    found[number] = json.loads(text)
        return found

    def all_finished(self) -> bool:
        """Every block's outcomes are written (one listing of the records)."""
        finished = self._finished_names()
        with self._lock:
            self._finished |= finished
            return len(self._finished) == len(self.ranges)

    def leave(self) -> None:
        """This participant takes no more blocks and holds none: said for the parent, which need not wait for it."""
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            self._left.put(str(context.flow_run.id), json.dumps({"left_at": time.time()}))

    def left(self) -> set[str]:
        """The flow runs that said they take no more blocks (one listing)."""
        return set(self._left.names())

    def _finished_names(self) -> set[int]:
        """The blocks whose outcomes are written, by listing the records (one request per thousand)."""
        numbers = {name.removeprefix("block-") for name in self._records.names() if name.startswith("block-")}
        return {int(number) for number in numbers if number.isdigit() and int(number) < len(self.ranges)}


def name_of(block: int) -> str:
    return f"block-{block}"


class BlockTaker:
    """When a participant takes its next block: room here and, under a render limit, a slot in hand.

    The slot is taken first, then the block, whose first row finds the slot kept under its
    name. So no row waits in a participant without slots while another has slots and no
    rows: a participant that gets none takes nothing, and with nothing under way it leaves
    after ``IDLE_PATIENCE`` seconds (``wait_for_slots``, the parent's and that of shards
    of a parent that takes no rows: not while blocks are unfinished).
    Without a render limit, a block is taken whenever fewer than ``room`` rows are under way.
    """

    def __init__(
        self, blocks: RowBlocks, slots: LimitSlots | None, batch_key: str, room: int, *, patience: float
    ) -> None:
        self.blocks = blocks
        self._slots = slots
        self._batch_key = batch_key
        self._room = room
        self._patience = patience  # with nothing under way: how long to wait for a slot
        self._asked_at = float("-inf")  # when the render limit was last read for room

    def row_key(self, number: int) -> str:
        """The name a row's reserved render slot is kept under in this process."""
        return f"{self._batch_key}:{number}"

    def next(self, running: int) -> Block | None:
        """The next block to run here, ``running`` rows being under way here; None: none now."""
        if self._slots is None:
            if running < self._room:
                return self.blocks.take()
            self._capped(None)
            return None
        # Rows delivering have given their slot back: up to ``room`` of them beside ``room`` rendering.
        if running >= 2 * self._room or self._slots.in_use() >= self._room:
            self._capped(self._slots)
            return None
        if not running and self.blocks.all_finished():
            return None  # a late participant: nothing is left, no slot to take for it
        # With nothing under way, a participant that must not leave waits as long as rows are unfinished.
        keep_waiting = not running and self.blocks.wait_for_slots and self._patience > 0
        while True:
            lease = self._slots.reserve(patience=0.0 if running else self._patience)
            if lease is not None:
                break
            if not keep_waiting or self.blocks.all_finished():
                return None
        try:
            block = self.blocks.take()
            if block is not None:
                self._slots.assign(lease, self.row_key(block.first))
        except BaseException:
            self._slots.unreserve(lease)  # no row will take it
            raise
        if block is None:
            self._slots.unreserve(lease)
        return block

    def _capped(self, slots: LimitSlots | None) -> None:
        """This participant is at its own cap: it wants help if the render limit has room (asked once a second)."""
        if self.blocks.want_help is None or time.monotonic() < self._asked_at + 1.0:
            return
        self._asked_at = time.monotonic()
        try:
            room = slots.free() if slots is not None else 1
        except Exception as error:  # no answer: no help asked for now
            get_run_logger().debug("render limit not read: %s", error)
            return
        if room > 0:
            self.blocks.want_help()
            self.blocks.want_help = None

    def unused(self, block: Block) -> None:
        """The block's first row was not run here (an invalid row): its reserved slot goes to the next."""
        release_reserved_slot(self.row_key(block.first))


def check_spread(
    spread: Spread,
    *,
    manifest: str,
    output_prefix: str,
    state: str,
    rows: list[ManifestRow],
    api: VideosApi | str | None,
    destination: S3Bucket | str | None,
) -> Any:
    """Everything other machines would trip on, refused before anything is paid; returns the deployment."""
    if spread.shards < 1:
        raise InvalidRequestError(f"spread.shards must be at least 1, got {spread.shards}")
    for name, given in (("api", api), ("destination", destination)):
        if given is not None and saved_name(given) is None:
            raise InvalidRequestError(
                f"{name}: a spread batch needs a saved block, passed by name (other workers load it there)"
            )
    if not spread.shared_paths:
        for field, value in (("manifest", manifest), ("output_prefix", output_prefix), ("state", state)):
            if not value.startswith("s3://"):
                raise InvalidRequestError(
                    f"{field} {value!r} is a local path other workers cannot see; use s3:// "
                    "(or spread.shared_paths=true if every worker mounts it)"
                )
        local_images = [row.number for row in rows if row.image and not row.image.startswith("s3://")]
        if local_images:
            shown = ", ".join(map(str, local_images[:10])) + (" ..." if len(local_images) > 10 else "")
            raise InvalidRequestError(
                f"rows {shown}: local image paths other workers cannot see; use s3:// (or spread.shared_paths=true)"
            )
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(spread.deployment)
        except ObjectNotFound:
            raise InvalidRequestError(
                f"spread.deployment: no deployment named {spread.deployment!r} (deploy prefect.yaml's `shard`)"
            ) from None
        if spread.work_pool is not None:
            try:
                client.read_work_pool(spread.work_pool)
            except ObjectNotFound:
                raise InvalidRequestError(f"spread.work_pool: no work pool named {spread.work_pool!r}") from None
            if deployment.work_pool_name != spread.work_pool:
                raise InvalidRequestError(
                    f"spread.work_pool: {spread.deployment} runs on work pool {deployment.work_pool_name!r}, "
                    f"not {spread.work_pool!r}"
                )
    return deployment


def run_spread(
    spread: Spread,
    *,
    manifest: str,
    rows: list[ManifestRow],
    invalid: list[InvalidRow],
    parameters: dict[str, Any],
    api: VideosApi | str | None,
    destination: S3Bucket | str | None,
    state: str,
    output_prefix: str,
    client: S3Client | None,
    work: Callable[[RowBlocks, float], object],
    render_limited: bool = False,
) -> list[dict[str, Any]]:
    """Start the shards; with ``wait``, run blocks here too (``work``) and gather every row's outcome."""
    check_spread(
        spread, manifest=manifest, output_prefix=output_prefix, state=state, rows=rows, api=api, destination=destination
    )
    total = max([row.number for row in rows] + [bad.number for bad in invalid] + [0])
    context = FlowRunContext.get()
    batch = str(context.flow_run.id) if context and context.flow_run else uuid.uuid4().hex
    # Under a render limit rows are taken with a slot in hand, one a block: a block of several
    # would leave all but its first waiting for slots wherever it was taken.
    block_rows = spread.block_rows or (1 if render_limited else max(1, int(parameters.get("max_in_flight") or 1) // 2))
    ranges = row_blocks(total, block_rows)
    here = spread.wait and spread.parent_rows
    count = max(1, min(spread.shards, len(ranges)))
    plan = [
        ShardRows(
            batch=batch, total=total, block_rows=block_rows, index=index, of=count + here, wait_for_slots=not here
        )
        for index in range(here, count + here)
    ]

    enough = threading.Event()  # set once the parent finds no block left to take
    wanted = threading.Event()  # set once the parent has rows it cannot start and the render limit has room

    def launch_all() -> list[tuple[ShardRows, FlowRun]]:
        runs: list[tuple[ShardRows, FlowRun]] = []
        for shard in plan:
            name = f"shard {shard.index} of {count}"
            if enough.is_set():
                get_run_logger().info(
                    "%s not scheduled: %s",
                    name,
                    "every row is taken already"
                    if wanted.is_set()
                    else "the parent kept the render limit busy by itself (every row is taken, or waits for "
                    "render slots the parent takes as they free)",
                )
                continue
            try:
                runs.append((shard, launch(spread, parameters, shard, name=name)))
            except Exception as error:  # the others, and the parent, take its blocks
                get_run_logger().warning("%s could not be scheduled: %s", name, error)
        return runs

    if not spread.wait:
        return [
            {"shard": shard.index, "flow_run_id": str(run.id), "flow_run": run.name, "status": "submitted"}
            for shard, run in launch_all()
        ]
    deadline = time.monotonic() + (spread.timeout_seconds or default_timeout(total, parameters))
    # The parent waits for a render slot as long as rows are unfinished: it must not leave its
    # first rows because the limit was full for a while (another batch's), or no shard would start.
    blocks = RowBlocks(state, batch, client, ranges, wait_for_slots=True, want_help=wanted.set)

    def launch_once_wanted() -> list[tuple[ShardRows, FlowRun]]:
        while not (wanted.wait(0.25) or enough.is_set()):
            pass
        return launch_all()

    if here:
        # A shard is a process to start (a second or more of CPU, wherever its worker runs):
        # it is scheduled once the parent has rows it cannot start itself (its max_in_flight
        # is reached) while the render limit has room for them; until then the parent's
        # rows are all the limit allows. Scheduling is a few API calls, done beside the rows.
        with ThreadPoolExecutor(1, thread_name_prefix="sora-launch") as launcher:
            launched = launcher.submit(contextvars.copy_context().run, launch_once_wanted)
            try:
                work(blocks, IDLE_PATIENCE)  # returns when no block is left to take: the rest are held by shards
            finally:
                # A shard not scheduled yet (a busy server answers 503 and the client backs off
                # for up to a minute) would find nothing to do; and none is scheduled once the
                # parent failed.
                enough.set()
            runs = [run for _, run in launched.result()]
    else:
        runs = [run for _, run in launch_all()]
    why = wait_for_blocks(spread, parameters, plan, runs, blocks, work if here else None, deadline)
    finished = blocks.outcomes()
    outcomes = [invalid_record(bad) for bad in invalid]
    for number, (first, last) in enumerate(ranges):
        if number in finished:
            outcomes += finished[number]
            continue
        # Held by a shard still running at the deadline, or by one that died and was not
        # replaced in time: reported; a rerun follows or delivers its rows from the receipts.
        for row in rows:
            if first <= row.number <= last:
                outcomes.append(
                    row_record(
                        row,
                        status="failed",
                        video_id=None,
                        error=f"its block was not finished: {why}; rerun the batch",
                        cost_usd=0.0,
                    )
                )
    return outcomes


def launch(spread: Spread, parameters: dict[str, Any], shard: ShardRows, *, name: str) -> FlowRun:
    """One flow run of the shard deployment taking blocks of ``shard``'s batch, returned once scheduled."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync here: a FlowRun, not a coroutine
        spread.deployment,
        parameters={**parameters, "shard": shard.model_dump()},
        flow_run_name=name,
        timeout=0,  # return once scheduled; the parent waits for it, or not at all
        as_subflow=True,
    )
    get_run_logger().info("%s: flow run %s (%s)", name, run.name, run.id)
    return run


def default_timeout(total: int, parameters: dict[str, Any]) -> float:
    """The api block's max_wait for each round of ``max_in_flight`` rows of the batch, plus 10 minutes."""
    from sora_tasks.blocks import load_api

    rounds = -(-total // max(1, int(parameters.get("max_in_flight") or 1)))
    return float(load_api(parameters.get("api")).max_wait) * rounds + 600.0


def wait_for_blocks(
    spread: Spread,
    parameters: dict[str, Any],
    plan: list[ShardRows],
    runs: list[FlowRun],
    blocks: RowBlocks,
    work: Callable[[RowBlocks, float], object] | None,
    deadline: float,
) -> str:
    """Until ``deadline``: until every block is finished (or none can be any more); why it stopped.

    A shard whose worker died stays Running (or Pending) for good on a self-hosted server,
    and a claim of its flow run is then never taken over from another machine; it is
    marked Crashed here once it has sent no heartbeat for ``dead_after_seconds`` (see
    :func:`poll_runs`), without waiting for any automation. Its blocks are then taken over
    (``work``: here; without it, by one more shard), and the claims and receipts of their
    rows make that pay only for what nobody paid for.
    """
    dead_after = dead_after_seconds(spread)
    relaunched: set[str] = set()
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            states = poll_runs(client, runs, dead_after)
            finished = blocks.all_finished()
            if finished or work is not None:
                # Nothing is left for a shard no worker has started: with every block finished,
                # or (the parent takes blocks) every block held by someone alive, whose blocks
                # the parent takes over if they die. Started, it would only cost a process.
                cancel_unstarted(client, runs, states)
            if finished:
                # Every row's outcome is written. A shard that said it left is ending (its
                # report, its process's exit: seconds the parent need not wait out); one still
                # taken that did not say so may be dead, and is waited for until it ends or is
                # marked Crashed above, so no run is left Running for good.
                taken = [run for run in runs if states.get(str(run.id)) in TAKEN_STATES]
                left = blocks.left() if taken else set()
                if all(str(run.id) in left for run in taken):
                    return "every block finished"
                time.sleep(END_POLL_SECONDS)
                continue
            elif work is not None:
                blocks.again()
                # A block whose shard died is taken over here (its claim's holder is gone), if a
                # render slot is free now: the others' rows are not kept waiting for this.
                work(blocks, 0.0)
                if blocks.all_finished():
                    continue  # look at the shards again at once
            elif not relaunch(spread, parameters, plan, runs, states, relaunched):
                return "every shard ended and none is left to start"  # the rows missing are reported
            time.sleep(POLL_SECONDS)
    return "the spread's deadline passed"


def cancel_unstarted(client: SyncPrefectClient, runs: list[FlowRun], states: dict[str, str]) -> None:
    """Propose Cancelled for each run still Scheduled; one a worker took meanwhile is left to end itself."""
    for run in runs:
        if states.get(str(run.id)) != "SCHEDULED":
            continue
        result: OrchestrationResult[Any] = client.set_flow_run_state(
            run.id, Cancelled(message="Not started: the batch's blocks were all taken or finished without it")
        )
        if result.status == SetStateStatus.ACCEPT:
            states[str(run.id)] = "CANCELLED"
            get_run_logger().info("%s was not started yet and nothing is left for it: cancelled", run.name)


def relaunch(
    spread: Spread,
    parameters: dict[str, Any],
    plan: list[ShardRows],
    runs: list[FlowRun],
    states: dict[str, str],
    relaunched: set[str],
) -> bool:
    """With no parent rows: once every shard is over and blocks are left (a shard died holding them), one
    more shard takes them over, once for each that ended without finishing. False when nothing can go on."""
    logger = get_run_logger()
    if any(states.get(str(run.id)) not in FINAL_STATES for run in runs):
        return True  # a shard is still running (or waiting for a worker)
    for run in runs:
        if states[str(run.id)] in ("CRASHED", "FAILED", "CANCELLED") and str(run.id) not in relaunched:
            relaunched.add(str(run.id))
            logger.warning("%s ended %s with blocks unfinished; a new shard takes them", run.name,
                           states[str(run.id)])  # fmt: skip
            runs.append(launch(spread, parameters, plan[0], name=f"{run.name} (again)"))
            return True
    return False


def dead_after_seconds(spread: Spread) -> float | None:
    """How long a taken shard may go without a heartbeat; None when flow runs send none."""
    if spread.dead_after_seconds is not None:
        return spread.dead_after_seconds
    frequency = get_current_settings().flows.heartbeat_frequency
    return None if frequency is None else SILENT_PERIODS * float(max(frequency, 30))


def poll_runs(client: SyncPrefectClient, runs: list[FlowRun], dead_after: float | None) -> dict[str, str]:
    """Each run's state type, by id; a taken run silent for ``dead_after`` is marked Crashed first."""
    if not runs:
        return {}
    found = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in runs])), limit=len(runs)
    )
    states = {str(run.id): run.state.type.value for run in found if run.state is not None}
    taken = [run for run in found if states.get(str(run.id)) in TAKEN_STATES]
    if dead_after is not None and taken:
        for run in silent_runs(client, taken, dead_after):
            if mark_crashed(client, run, dead_after):
                states[str(run.id)] = "CRASHED"
    return states


def silent_runs(client: SyncPrefectClient, runs: list[FlowRun], dead_after: float) -> list[FlowRun]:
    """The runs of ``runs`` that entered their state and sent no heartbeat in the last ``dead_after`` seconds.

    A flow run beats as it starts and every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds after;
    a Pending run sends none, so it is silent once it has been Pending that long (its worker
    died between taking it and starting it: no other worker takes it then).
    """
    now = datetime.now(timezone.utc)
    since = now - timedelta(seconds=dead_after)
    # Only a run in its state for longer than dead_after can have been silent that long.
    candidates = {f"prefect.flow-run.{run.id}": run for run in runs if run.state and run.state.timestamp < since}
    beating: set[str] = set()
    names = list(candidates)
    try:
        for first in range(0, len(names), EVENTS_PAGE):
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=[HEARTBEAT]),
                    resource=EventResourceFilter(id=names[first : first + EVENTS_PAGE], distinct=True),
                    # Up to an hour ahead: a worker's clock a little ahead of ours must not hide its beats.
                    occurred=EventOccurredFilter.model_validate({"since": since, "until": now + timedelta(hours=1)}),
                ),
                limit=EVENTS_PAGE,
            )
            beating |= {event.resource.id for event in page.events}
    except Exception as error:  # no answer is no evidence: nobody is taken for dead on it
        get_run_logger().warning("could not read the shards' heartbeats: %s", error)
        return []
    return [run for name, run in candidates.items() if name not in beating]


def mark_crashed(client: SyncPrefectClient, run: FlowRun, dead_after: float) -> bool:
    """Propose Crashed for a silent run; False if the server refuses (it ended meanwhile: never forced)."""
    message = (
        f"No heartbeat for {dead_after:.0f} s (its worker or machine is gone): "
        "marked Crashed by the spread batch's parent, so its blocks are taken over"
    )
    result: OrchestrationResult[Any] = client.set_flow_run_state(run.id, Crashed(message=message))
    accepted = result.status == SetStateStatus.ACCEPT
    if accepted:
        get_run_logger().warning("%s (%s) sent no heartbeat for %.0f s: marked Crashed", run.name, run.id, dead_after)
    return accepted

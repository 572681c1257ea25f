"""A batch spread over Prefect workers: row ranges of one manifest, each a flow run of the shard deployment.

Nothing is copied: every shard reads the same manifest and takes its rows. Shards run on
whatever workers serve the shard deployment's work pool (process, Docker, Kubernetes,
ECS), so everything a shard needs must be visible from any machine: saved blocks (by
name), and S3 for the manifest, the outputs, the images and the receipts, unless the
caller says local paths are on a shared disk. Each shard writes its outcome table beside
the receipts; the parent waits for every shard and writes one table of every row.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect_aws import S3Bucket
from pydantic import BaseModel, Field

from sora_tasks.blocks import VideosApi
from sora_tasks.core.errors import InvalidRequestError
from sora_tasks.core.jobs.manifest import InvalidRow, ManifestRow
from sora_tasks.core.jobs.rows import invalid_record, row_record
from sora_tasks.core.storage.destinations import S3Client
from sora_tasks.core.storage.records import RecordStore

from .delivery import saved_name

SHARD_DEPLOYMENT = "generate-videos/shard"
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
POLL_SECONDS = 2.0


class Spread(BaseModel):
    """How to spread a batch over workers."""

    shards: int = Field(default=2, description="How many flow runs share the rows (at least 1).")
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
        "None: the api block's max_wait for each round of max_in_flight rows of a shard, plus 10 minutes.",
    )


class ShardRows(BaseModel):
    """The rows one shard takes (row numbers, first and last included) and its batch's id."""

    first: int
    last: int
    batch: str

    @property
    def record_name(self) -> str:
        return f"rows-{self.first}-{self.last}"


def row_ranges(total: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, nearly equal ranges of row numbers 1..total; no empty range."""
    shards = min(shards, total)
    size, extra = divmod(total, shards)
    ranges, first = [], 1
    for index in range(shards):
        last = first + size - 1 + (1 if index < extra else 0)
        ranges.append((first, last))
        first = last + 1
    return ranges


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
) -> list[dict[str, Any]]:
    """Start one flow run per row range; with ``wait``, gather every row's outcome."""
    check_spread(
        spread, manifest=manifest, output_prefix=output_prefix, state=state, rows=rows, api=api, destination=destination
    )
    logger = get_run_logger()
    total = max([row.number for row in rows] + [bad.number for bad in invalid] + [0])
    context = FlowRunContext.get()
    batch = str(context.flow_run.id) if context and context.flow_run else uuid.uuid4().hex
    shards = [
        (shard, launch(spread, parameters, shard))
        for shard in (
            ShardRows(first=first, last=last, batch=batch) for first, last in row_ranges(total, spread.shards)
        )
    ]
    if not spread.wait:
        return [
            {
                "rows": f"{shard.first}-{shard.last}",
                "flow_run_id": str(run.id),
                "flow_run": run.name,
                "status": "submitted",
            }
            for shard, run in shards
        ]
    deadline = time.monotonic() + (spread.timeout_seconds or default_timeout(shards, parameters))
    store = RecordStore(f"{state}/batches/{batch}", client)
    ended = wait_for_runs([run.id for _, run in shards], deadline=deadline)
    # A shard that crashed (its worker died: the zombie automation marks a run whose heartbeats
    # stop) or ended without its table is run once more: claims and receipts make that pay
    # only for the rows nobody paid for.
    again = [
        (shard, run)
        for shard, run in shards
        if ended.get(str(run.id)) in ("CRASHED", "FAILED", "CANCELLED") and store.get(shard.record_name) is None
    ]
    if again and time.monotonic() < deadline:
        retried = []
        for shard, run in again:
            logger.warning("rows %d-%d: %s ended %s without a report; running them again", shard.first,
                           shard.last, run.name, ended[str(run.id)])  # fmt: skip
            retried.append((shard, launch(spread, parameters, shard, suffix=" (again)")))
        ended |= wait_for_runs([run.id for _, run in retried], deadline=deadline)
        replaced = {shard.record_name: run for shard, run in retried}
        shards = [(shard, replaced.get(shard.record_name, run)) for shard, run in shards]
    outcomes = [invalid_record(bad) for bad in invalid]
    for shard, run in shards:
        text = store.get(shard.record_name)
        if text is not None:
            outcomes += json.loads(text)
            continue
        # The shard died before writing its table, or was still running at the deadline:
        # its rows are reported, and a rerun follows or delivers them from the receipts.
        ending = ended.get(str(run.id))
        how = f"ended {ending}" if ending else "was still running at the spread's deadline"
        for row in rows:
            if shard.first <= row.number <= shard.last:
                outcomes.append(
                    row_record(
                        row,
                        status="failed",
                        video_id=None,
                        error=f"shard flow run {run.name} {how} without a report; rerun the batch",
                        cost_usd=0.0,
                    )
                )
    return outcomes


def launch(spread: Spread, parameters: dict[str, Any], shard: ShardRows, *, suffix: str = "") -> FlowRun:
    """One flow run of the shard deployment for ``shard``'s rows, returned once scheduled."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync here: a FlowRun, not a coroutine
        spread.deployment,
        parameters={**parameters, "shard": shard.model_dump()},
        flow_run_name=f"rows {shard.first}-{shard.last}{suffix}",
        timeout=0,  # return once scheduled; the parent waits for it, or not at all
        as_subflow=True,
    )
    get_run_logger().info("rows %d-%d: flow run %s (%s)", shard.first, shard.last, run.name, run.id)
    return run


def default_timeout(shards: list[tuple[ShardRows, FlowRun]], parameters: dict[str, Any]) -> float:
    """The api block's max_wait for each round of ``max_in_flight`` rows of the largest shard, plus 10 minutes."""
    from sora_tasks.blocks import load_api

    largest = max(shard.last - shard.first + 1 for shard, _ in shards)
    rounds = -(-largest // max(1, int(parameters.get("max_in_flight") or 1)))
    return float(load_api(parameters.get("api")).max_wait) * rounds + 600.0


def wait_for_runs(ids: list[Any], *, deadline: float | None = None) -> dict[str, str]:
    """Each flow run's final state type, polling the Prefect API; runs not ended by ``deadline`` are left out."""
    ended: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while len(ended) < len(ids) and (deadline is None or time.monotonic() < deadline):
            for run_id in ids:
                if str(run_id) in ended:
                    continue
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.type.value in FINAL_STATES:
                    ended[str(run_id)] = run.state.type.value
            if len(ended) < len(ids):
                time.sleep(POLL_SECONDS)
    return ended

"""The control socket's way into the service: :class:`ServiceApi` implements
:class:`pgwarden.control.api.DaemonApi` on top of a :class:`~pgwarden.service.core.Service`.

The daemon claims its control socket before it opens the catalog (a second daemon must refuse
before its crash recovery could touch the first one's jobs), so the control server is built
with an API that is not yet :meth:`~ServiceApi.attach`-ed to a service; until it is, every
call answers ``busy``.  The server only accepts connections once the service is attached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgwarden.catalog import LIVE_STATUSES, BackupRecord, TargetSummary
from pgwarden.catalog.offsite_summary import DestinationSummary, destination_summaries
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind
from pgwarden.control.api import (
    ConfigSnapshot,
    DaemonStatus,
    JobRequest,
    JobView,
    PauseState,
    ReloadResult,
    ReloadStatus,
    Submission,
    TargetStatus,
)
from pgwarden.errors import BusyError, CatalogError
from pgwarden.retention.reconcile import set_pin
from pgwarden.service.core import Service
from pgwarden.storage.locks import BackupLocks


def job_args(request: JobRequest, service: Service) -> dict[str, Any]:
    """A request's options as job arguments (a backup reference resolved to its id)."""
    args: dict[str, Any] = {}
    if request.priority is not None:  # a backup's or a drill's, for this run only
        args["priority"] = request.priority
    if request.kind is JobKind.BACKUP and request.tags:
        # like ``pgwarden backup --tag``: a manual backup keeps its "manual" tag
        args["tags"] = list(dict.fromkeys(["manual", *request.tags]))
    elif request.kind is JobKind.VERIFY and request.backup is not None:
        args["backup"] = service.state.catalog.get_backup(request.backup, request.target).id
    elif request.kind is JobKind.PRUNE and request.dry_run:
        args["dry_run"] = True
    elif request.kind is JobKind.OFFSITE and request.destination is not None:
        service.state.config.destination(request.destination)  # NotFoundError: the known ones
        args["destination"] = request.destination
    return args


class ServiceApi:
    """See the module docstring."""

    def __init__(self) -> None:
        self._service: Service | None = None

    def attach(self, service: Service) -> None:
        self._service = service

    @property
    def service(self) -> Service:
        if self._service is None:
            raise BusyError("the daemon is still starting; try again in a moment")
        return self._service

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> Submission:
        service = self.service
        service.state.config.target(request.target)  # NotFoundError before the backup lookup
        args = job_args(request, service)
        job, existing = service.submit(request.kind, request.target, args)
        if existing and job.args != args:
            raise BusyError(
                f"a {request.kind} of {request.target} with other options is already queued "
                f"or running (job {job.id}); try again when it has finished"
            )
        return Submission(job, existing)

    def jobs(self) -> Sequence[JobView]:
        return self.service.runner.jobs()

    def job(self, job_id: str) -> JobView | None:
        return self.service.runner.get(job_id)

    # -- status and config -----------------------------------------------------------------
    def config(self) -> ConfigSnapshot:
        return self.service.snapshot()

    def status(self) -> DaemonStatus:
        service = self.service
        snapshot = service.snapshot()
        paused = service.pauses.state()
        summaries, catalog_error = self._summaries()
        targets = [
            TargetStatus(
                t.name,
                paused.covers(t.name),
                service.scheduler.next_for(t.name),
                summaries.get(t.name),
            )
            for t in snapshot.config.targets
        ]
        return DaemonStatus(
            started_at=service.started_at,
            config=snapshot,
            paused=paused,
            jobs=service.runner.jobs(),
            running=service.runner.running_count(),
            targets=targets,
            catalog_error=catalog_error,
            offsite=self._offsite(snapshot.config) if catalog_error is None else (),
        )

    def _summaries(self) -> tuple[dict[str, TargetSummary], str | None]:
        try:
            return self.service.state.catalog.summaries(), None
        except CatalogError as exc:
            return {}, str(exc)

    def _offsite(self, config: Config) -> list[DestinationSummary]:
        pairs = [(t.name, d.name) for t in config.targets for d in config.offsite_for(t)]
        try:
            return destination_summaries(self.service.state.catalog, pairs)
        except CatalogError:
            return []

    def reload(self, timeout: float) -> ReloadResult:
        service = self.service
        result = service.reloads.ask(timeout)
        if result is None:
            return ReloadResult(ReloadStatus.PENDING, service.snapshot())
        return result

    # -- pauses ----------------------------------------------------------------------------
    def pause(self, target: str | None) -> PauseState:
        service = self.service
        if target is not None:
            service.state.config.target(target)  # NotFoundError
        return service.pauses.pause(target)

    def resume(self, target: str | None) -> PauseState:
        service = self.service
        config = service.state.config
        if target is not None:
            config.target(target)  # NotFoundError
        return service.pauses.resume(target, (t.name for t in config.targets))

    # -- backups ---------------------------------------------------------------------------
    def backups(self, target: str | None, *, include_deleted: bool) -> Sequence[BackupRecord]:
        state = self.service.state
        statuses = None if include_deleted else LIVE_STATUSES
        records = state.catalog.list_backups(target, statuses=statuses)
        if target is not None and not records:
            state.config.target(target)  # an unknown target is not_found; a known one just empty
        return records

    def set_pin(self, target: str, backup: str, *, pinned: bool) -> BackupRecord:
        state = self.service.state
        config = state.config
        config.target(target)  # NotFoundError
        locks = BackupLocks(config.daemon.state_dir)
        return set_pin(state.catalog, state.storage, backup, pinned, target=target, locks=locks)

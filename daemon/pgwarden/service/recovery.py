"""Start-up recovery: what a crash or a stop left behind is cleaned before the daemon is ready.

``.partial`` files and ``running`` backups of dead runs are reaped (:mod:`pgwarden.backup.reap`:
a live one-shot run's are left alone), so are the ``running`` rows of dead drills
(:mod:`pgwarden.restore.drillreap`), the history gauges are restored from the catalog
(:mod:`.outcomes`), and, in a background thread so that a server down at start-up never
delays ``READY=1``, every target's server is checked: scratch databases of a crashed drill
are dropped and a usable ``pg_dump`` is looked for.
"""

from __future__ import annotations

import threading

from pgwarden import logsetup
from pgwarden.backup.reap import log_reaped, reap_dead_runs
from pgwarden.config import TargetConfig
from pgwarden.errors import IncompatibleToolError, describe
from pgwarden.pg.binaries import find_tool
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.server import server_major, server_version
from pgwarden.restore.drill import drop_leftover_scratch_databases
from pgwarden.restore.drillreap import log_reaped_drills, reap_dead_drills
from pgwarden.service import outcomes
from pgwarden.service.state import ServiceState

log = logsetup.get_logger("pgwarden.state")


def recover(state: ServiceState) -> None:
    """Clean up after the previous run; start the server checks in the background."""
    # only dead runs' partials and rows: a one-shot backup or restore may be running
    log_reaped(reap_dead_runs(state.config, state.catalog, state.storage))
    # only dead drills' rows: a one-shot drill may be running
    log_reaped_drills(reap_dead_drills(state.config, state.catalog))
    outcomes.restore_gauges(state)
    # server checks may wait on a connect timeout: they must not delay READY=1
    threading.Thread(
        target=check_servers, args=(state,), name="startup-checks", daemon=True
    ).start()


def check_servers(state: ServiceState) -> None:
    """Once at start-up, per target: drop scratch databases a crashed drill left behind,
    and check that a usable pg_dump exists — so an operator learns of a missing
    postgresql-client-N at noon (log, metric, ``pgwarden check``), not at 3 AM."""
    for target in state.config.targets:
        try:
            for name in drop_leftover_scratch_databases(target):
                log.warning("dropped a scratch database left by a crash", database=name)
            state.metrics.pg_dump_compatible.labels(target.name).set(
                1 if pg_dump_usable(target) else 0
            )
        except Exception as exc:  # noqa: BLE001 - a server down at start-up is not fatal
            log.warning(
                "cannot check the server at start-up",
                target=target.name,
                error=describe(exc),
            )


def pg_dump_usable(target: TargetConfig) -> bool:
    """Whether a pg_dump at least as new as ``target``'s server is installed (logs why not)."""
    with ConnSpec.from_target(target).connect(application_name="pgwarden") as conn:
        major, version = server_major(conn), server_version(conn)
    try:
        find_tool("pg_dump", min_major=major, bin_dir=target.bin_dir, server_version=version)
    except IncompatibleToolError as exc:
        log.error("backups of this target will fail", target=target.name, error=str(exc))
        return False
    return True

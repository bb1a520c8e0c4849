"""The off-site lines of ``pgwarden check``: each ``[[offsite]]`` destination, then each
target's copies there.

Per destination (shown with the configuration items, ``subject`` = the destination's name):

* ``offsite.credentials`` -- both keys resolvable from their configured source (environment
  variable, file, systemd credential), never shown; a missing variable is named, its value
  never.  No key configured: boto3's own chain, said so;
* ``offsite.reachable`` -- :meth:`~pgwarden.storage.objects.ObjectStore.probe`: a small test
  object written, read back and deleted (a missing bucket, a wrong key or a refused write
  fails with the store's message);
* ``offsite.versioning`` -- noted: on a versioned bucket (B2 always is) pgwarden deletes every
  version of the objects it created, so remote retention really frees the space (``warn``,
  because versions written by anything else, and a lifecycle rule, are the operator's).

Per target and destination (``subject`` = the destination):

* ``offsite.newest_copy`` -- the newest confirmed copy in the catalog: ``warn`` when there is
  none (never uploaded, or every copy since removed) or its upload is older than
  :data:`STALE` (the alert's 26 h);
* ``offsite.last_upload`` -- ``fail`` when the newest upload attempt failed (its error, already
  redacted when it was recorded), until a later attempt succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgwarden.catalog import Catalog, open_catalog
from pgwarden.catalog.offsite_summary import DestinationSummary, destination_summaries
from pgwarden.config import Config
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.config.secretfiles import resolve_secret
from pgwarden.errors import PgwardenError
from pgwarden.monitor.checklist import human
from pgwarden.monitor.verdicts import CheckResult, Status
from pgwarden.storage import open_object_store
from pgwarden.storage.objects import ObjectStore, ProbeResult

#: a newest confirmed copy older than this is a warning (PgwardenNoOffsiteCopy's threshold)
STALE = timedelta(hours=26)

StoreOpener = Callable[[OffsiteConfig], ObjectStore]


@dataclass(frozen=True)
class OffsiteChecks:
    """The destination items (configuration level) and each target's items."""

    destinations: tuple[CheckResult, ...] = ()
    targets: Mapping[str, tuple[CheckResult, ...]] = field(default_factory=dict)


def run_offsite_checks(config: Config, target: str | None) -> OffsiteChecks:
    """:func:`offsite_checks` with the configured catalog (none yet: no state directory)."""
    if not config.offsite:
        return OffsiteChecks()
    catalog: Catalog | None = None
    if Path(config.daemon.state_dir).exists():
        try:
            catalog = open_catalog(config.daemon.effective_catalog_url)
        except PgwardenError:
            catalog = None  # the checklist's own catalog item says why
    try:
        return offsite_checks(config, target, catalog)
    finally:
        if catalog is not None:
            catalog.close()


def offsite_checks(
    config: Config,
    target: str | None,
    catalog: Catalog | None,
    *,
    now: datetime | None = None,
    opener: StoreOpener = open_object_store,
) -> OffsiteChecks:
    """Every destination's items (only those the named target uses, when one is named) and
    every target's; ``catalog`` None: no catalog yet (no copy was ever recorded)."""
    now = now or datetime.now(UTC)
    names = [target] if target else [t.name for t in config.targets]
    used = {name: [d.name for d in config.offsite_for(name)] for name in names}
    wanted = {d for ds in used.values() for d in ds}  # a target named: its destinations only
    destinations = [d for d in config.offsite if target is None or d.name in wanted]
    items: list[CheckResult] = []
    for destination in destinations:
        items += destination_checks(destination, opener)
    per_target: dict[str, tuple[CheckResult, ...]] = {}
    pairs = [(t, d) for t, ds in used.items() for d in ds]
    for item in _summaries(catalog, pairs):
        found = [item] if isinstance(item, CheckResult) else copy_checks(item, now)
        key = found[0].target or ""
        per_target[key] = (*per_target.get(key, ()), *found)
    return OffsiteChecks(tuple(items), per_target)


def _summaries(
    catalog: Catalog | None, pairs: list[tuple[str, str]]
) -> Iterable[DestinationSummary | CheckResult]:
    if not pairs:
        return []
    if catalog is None:
        return [DestinationSummary.empty(t, d) for t, d in pairs]
    try:
        return destination_summaries(catalog, pairs)
    except PgwardenError as exc:
        return [
            CheckResult("offsite.newest_copy", "unknown", f"cannot read the catalog: {exc}", t, d)
            for t, d in pairs
        ]


# -- per destination -------------------------------------------------------------------------


def destination_checks(destination: OffsiteConfig, opener: StoreOpener) -> list[CheckResult]:
    """Credentials, then (when they are there) the probe and what it says of versioning."""
    name = destination.name
    credentials = credentials_check(destination)
    if credentials.status == "fail":
        skipped = "not tried: the credentials are missing"
        return [credentials, CheckResult("offsite.reachable", "unknown", skipped, None, name)]
    try:
        probe = opener(destination).probe()
    except PgwardenError as exc:
        probe = ProbeResult(writable=False, versioning=None, error=str(exc))
    return [credentials, *probe_checks(destination, probe)]


def credentials_check(destination: OffsiteConfig) -> CheckResult:
    name = destination.name
    what = f"offsite[{name}]"
    sources = (
        ("access_key_id", destination.access_key_id),
        ("secret_access_key", destination.secret_access_key),
    )
    if not any(source.configured for _, source in sources):
        detail = (
            "no keys configured: boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "~/.aws/credentials, an instance role)"
        )
        return CheckResult("offsite.credentials", "pass", detail, None, name)
    problems, found = [], []
    for key, source in sources:
        try:
            resolve_secret(source, f"{what}.{key}")
        except PgwardenError as exc:  # names the variable, file or credential; never a value
            problems.append(str(exc))
            continue
        found.append(f"{key} from {_origin(source.env, source.file, source.credential)}")
    if problems:
        return CheckResult("offsite.credentials", "fail", "; ".join(problems), None, name)
    detail = "; ".join(found)
    if any(source.value is not None for _, source in sources):
        detail += (
            f"; a key is written in {destination.name}'s [[offsite]] table: move it to "
            "*_env, *_file or *_credential (systemd)"
        )
        return CheckResult("offsite.credentials", "warn", detail, None, name)
    return CheckResult("offsite.credentials", "pass", detail, None, name)


def _origin(env: str | None, file: object | None, credential: str | None) -> str:
    if env is not None:
        return f"${env}"
    if file is not None:
        return f"file {file}"
    if credential is not None:
        return f"systemd credential {credential}"
    return "the config file (plaintext)"


def probe_checks(destination: OffsiteConfig, probe: ProbeResult) -> list[CheckResult]:
    name = destination.name
    where = f"s3://{destination.bucket}/{destination.prefix}"
    if not probe.writable:
        detail = f"{where}: {probe.error or 'the test object could not be written'}"
        return [
            CheckResult("offsite.reachable", "fail", detail, None, name),
            CheckResult("offsite.versioning", "unknown", "not known: unreachable", None, name),
        ]
    reachable = CheckResult(
        "offsite.reachable",
        "pass",
        f"{where}: a test object was written, read back and deleted",
        None,
        name,
    )
    return [reachable, versioning_check(name, probe.versioning)]


def versioning_check(name: str, versioning: str | None) -> CheckResult:
    status: Status
    if versioning == "Enabled":
        status, detail = (
            "warn",
            "versioning is Enabled: pgwarden deletes every version of the objects it created, "
            "so remote retention frees the space; versions written by anything else stay "
            "(and are billed) until a lifecycle rule removes them",
        )
    elif versioning == "Suspended":
        status, detail = (
            "pass",
            "versioning is Suspended: pgwarden deletes every version of its own objects, "
            "including those kept from when it was enabled",
        )
    else:
        status, detail = "pass", "versioning is off: a deleted copy frees its space at once"
    return CheckResult("offsite.versioning", status, detail, None, name)


# -- per target and destination --------------------------------------------------------------


def copy_checks(summary: DestinationSummary, now: datetime) -> list[CheckResult]:
    target, name = summary.target, summary.destination
    if summary.last_upload is None:
        newest = CheckResult(
            "offsite.newest_copy",
            "warn",
            f"no copy confirmed on {name} yet (pgwarden offsite sync {target})",
            target,
            name,
        )
    elif summary.copies == 0:  # every copy since removed (a rebuild found them gone)
        newest = CheckResult(
            "offsite.newest_copy",
            "warn",
            f"no copy kept on {name}: every confirmed copy is gone (the last upload was "
            f"{human(now - summary.last_upload)} ago); pgwarden offsite sync {target}",
            target,
            name,
        )
    else:
        age = now - summary.last_upload
        status: Status = "warn" if age > STALE else "pass"
        detail = (
            f"the newest copy on {name} was confirmed {human(age)} ago; {summary.copies} "
            f"cop{'y' if summary.copies == 1 else 'ies'} kept"
        )
        if age > STALE:
            detail += f"; older than {human(STALE)}: are backups or uploads failing?"
        newest = CheckResult("offsite.newest_copy", status, detail, target, name)
    if not summary.failing:
        return [newest]
    when = summary.last_error_at.isoformat(timespec="minutes") if summary.last_error_at else "?"
    backup = (summary.failed_backup or "")[:8]
    failed = CheckResult(
        "offsite.last_upload",
        "fail",
        f"the newest upload to {name} ({backup}, {when}) failed: {summary.last_error or '?'}; "
        "the next run retries it",
        target,
        name,
    )
    return [newest, failed]


def merge_offsite(results: list[CheckResult], checks: OffsiteChecks) -> list[CheckResult]:
    """The destination items after the leading configuration items, each target's items after
    its last one, keeping the report grouped."""
    per_target = checks.targets
    lead = 0
    while lead < len(results) and results[lead].target is None:
        lead += 1
    merged = [*results[:lead], *checks.destinations]
    rest = results[lead:]
    for i, r in enumerate(rest):
        merged.append(r)
        following = rest[i + 1].target if i + 1 < len(rest) else None
        if r.target in per_target and following != r.target:
            merged += per_target[r.target or ""]
    return merged

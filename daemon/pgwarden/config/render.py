"""Turning a :class:`~pgwarden.config.Config` back into TOML (``config show``) and the
commented starter file (``config init``).

``effective_dict`` mirrors the file's structure with every default filled in; secrets are
replaced by ``"***"`` so the output is safe to paste into an issue.  The starter file is the
shipped ``pgwarden.example.toml`` (every key, commented).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from pgwarden.config.model import Config, Credentials, TargetConfig
from pgwarden.config.notify import NotifyConfig
from pgwarden.config.offsite import OffsiteConfig, SecretSource
from pgwarden.redaction import REDACTED, Secret, redact, redact_dsn


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None:
                continue  # TOML has no null: an absent key means "not set"
            if isinstance(item, Credentials) or f.name == "settings":
                out.update(_plain(item))
            else:
                out[f.name] = _plain(item)
        return out
    return value


def _target(target: TargetConfig) -> dict[str, Any]:
    out: dict[str, Any] = _plain(target)
    # the DSN is shown without any password it may carry (plaintext opt-in)
    out["dsn"] = redact_dsn(target.dsn)
    if target.verify.dsn:
        out["verify"]["dsn"] = redact_dsn(target.verify.dsn)
    if target.migrations.dsn:
        out["migrations"]["dsn"] = redact_dsn(target.migrations.dsn)
    if target.retention.schedule is None:
        out["retention"]["schedule"] = "off"
    if target.databases == ("*",):
        out["databases"] = "*"
    if target.migrations.database_url_env is None:
        out["migrations"]["database_url_env"] = ""
    return out


def _offsite(offsite: OffsiteConfig) -> dict[str, Any]:
    """A destination as written in the file: ``<key>_env``/``_file``/``_credential``, an
    inline key as ``***``; no ``[offsite.encryption]`` when the copies are not encrypted."""
    out: dict[str, Any] = {}
    for name, value in _plain(offsite).items():
        if name in ("access_key_id", "secret_access_key"):
            out.update(_secret_source(name, getattr(offsite, name)))
        else:
            out[name] = value
    return out


def _notify(notify: NotifyConfig) -> dict[str, Any]:
    """A ``[[notify]]`` destination as written: its ``url_*``/``urls_*``/``secret_*`` sources,
    an inline URL as ``***``."""
    out: dict[str, Any] = {"name": notify.name, "kind": notify.kind}
    for key in ("url", "urls", "secret"):
        out.update(_secret_source(key, getattr(notify, key)))
    out["events"] = list(notify.events)
    if notify.targets is not None:
        out["targets"] = list(notify.targets)
    out.update(timeout=notify.timeout, retries=notify.retries)
    if notify.kind == "healthchecks":
        out["ping_style"] = notify.ping_style
    return out


def _secret_source(key: str, source: SecretSource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for suffix, value in (("_env", source.env), ("_file", source.file)):
        if value is not None:
            out[key + suffix] = str(value)
    if source.credential is not None:
        out[f"{key}_credential"] = source.credential
    if source.value is not None:
        out[key] = REDACTED
    return out


def effective_dict(config: Config) -> dict[str, Any]:
    daemon = _plain(config.daemon)
    daemon["socket_mode"] = f"{config.daemon.socket_mode:04o}"
    if config.daemon.catalog_url:  # an SQLAlchemy URL: its password (plaintext opt-in) hidden
        daemon["catalog_url"] = redact(config.daemon.catalog_url)
    result: dict[str, Any] = {
        "daemon": daemon,
        "metrics": _plain(config.metrics),
        "monitor": _plain(config.monitor),
        "storage": _plain(config.storage),
        "targets": [_target(t) for t in config.targets],
    }
    if config.pgbouncers:
        result["pgbouncer"] = [{**_plain(b), "dsn": redact_dsn(b.dsn)} for b in config.pgbouncers]
    if config.offsite:
        result["offsite"] = [_offsite(o) for o in config.offsite]
    if config.notify:
        result["notify"] = [_notify(n) for n in config.notify]
    if not result["targets"]:
        del result["targets"]
    return result


def render_effective(config: Config) -> str:
    header = (
        f"# effective configuration of {config.source} (defaults filled in, secrets redacted)\n"
    )
    return header + tomli_w.dumps(effective_dict(config))


def example_path() -> Path:
    """The shipped, commented example config (in the wheel, or in the source tree)."""
    package = Path(__file__).resolve().parents[1]  # pgwarden/
    for candidate in (
        package / "_data" / "pgwarden.example.toml",
        package.parents[1] / "config" / "pgwarden.example.toml",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("pgwarden.example.toml is missing from this installation")


def starter_config() -> str:
    return example_path().read_text(encoding="utf-8")

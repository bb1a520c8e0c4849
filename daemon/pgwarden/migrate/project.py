"""Locating a target's Alembic project: its ini file, its versions directories, its ``alembic``.

This module owns how pgwarden finds an application's migrations *without importing any of the
application's code*:

* the ini file is ``[targets.migrations] alembic_ini``, relative to ``project`` unless absolute;
* the versions directories are ``versions`` when configured; else the ini's
  ``version_locations`` (split the way Alembic splits them) or ``script_location`` +
  ``/versions``; else ``[tool.alembic]`` in ``project/pyproject.toml`` (Alembic >= 1.16).
  The ini is read with :mod:`configparser` as Alembic reads it: ``%(here)s`` is the directory
  holding the file.  A relative location is relative to ``project``, the directory pgwarden
  runs ``alembic`` in.  A package resource (``myapp:migrations``) cannot be resolved without
  importing the package: set ``versions`` instead;
* the ``alembic`` executable is a path (relative ones are relative to ``project``) or a name
  looked up on the ``PATH`` the child process gets.

Every problem is a :class:`~pgwarden.errors.ConfigError` naming the key path
(``targets[0].migrations.alembic_ini``) and the config file.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pgwarden.config import Config, MigrationSettings, TargetConfig
from pgwarden.errors import ConfigError, UsageError
from pgwarden.redaction import redact

__all__ = ["AlembicProject", "locate", "resolve_alembic", "settings_key"]

#: ``path_separator`` / ``version_path_separator`` values Alembic understands
_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}
_LEGACY_SPLIT = re.compile(r", *|(?: +)")


@dataclass(frozen=True)
class AlembicProject:
    """Where one target's migrations live."""

    project: Path
    ini: Path
    versions: tuple[Path, ...]


def settings_key(config: Config, target: TargetConfig) -> str:
    """``targets[N].migrations``: the key path that error messages name."""
    for index, candidate in enumerate(config.targets):
        if candidate.name == target.name:
            return f"targets[{index}].migrations"
    return f"targets[{target.name}].migrations"


def locate(config: Config, target: TargetConfig) -> AlembicProject:
    """The ini and versions directories of ``target``'s Alembic project (they must exist)."""
    settings = target.migrations
    key = settings_key(config, target)
    if settings.project is None:
        raise UsageError(
            f"target {target.name!r} has no Alembic project: set {key}.project "
            "(the directory holding alembic.ini)"
        )
    project = settings.project
    if not project.is_dir():
        raise ConfigError(config.source, [f"{key}.project: {project} is not a directory"])
    ini = _absolute(Path(settings.alembic_ini), project)
    if not ini.is_file():
        raise ConfigError(config.source, [f"{key}.alembic_ini: {ini} does not exist"])
    if settings.versions is not None:
        dirs: tuple[Path, ...] = (settings.versions,)
        where = f"{key}.versions"
    else:
        try:
            dirs = versions_from_ini(ini, project)
        except ValueError as exc:
            # versions_from_ini's own message, already redacted; its cause is not chained
            raise ConfigError(config.source, [f"{key}.alembic_ini: {ini}: {exc}"]) from None
        where = f"{key}.alembic_ini ({ini})"
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        listed = ", ".join(str(d) for d in missing)
        raise ConfigError(config.source, [f"{where}: versions directory {listed} does not exist"])
    return AlembicProject(project=project, ini=ini, versions=dirs)


def versions_from_ini(ini: Path, project: Path) -> tuple[Path, ...]:
    """The versions directories an ini (or ``pyproject.toml``'s ``[tool.alembic]``) names.

    Raises ``ValueError`` with a readable reason when it names none or one that pgwarden
    cannot resolve without importing code.
    """
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
    try:
        with ini.open(encoding="utf-8") as handle:
            parser.read_file(handle)
        section = dict(parser.items("alembic")) if parser.has_section("alembic") else {}
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        # a ParsingError quotes the ini's lines, a sqlalchemy.url with its password among
        # them: redacted, and not chained
        raise ValueError(f"cannot read it: {redact(str(exc))}") from None
    locations = section.get("version_locations")
    separator = section.get("path_separator") or section.get("version_path_separator")
    script_location = section.get("script_location")
    if not script_location and not locations:
        from_toml = _pyproject_options(project / "pyproject.toml")
        if from_toml is not None:
            script_location, toml_locations = from_toml
            return _resolve_locations(script_location, toml_locations, project)
        raise ValueError("no script_location in its [alembic] section (nor in pyproject.toml)")
    parts = _split(locations, separator) if locations else None
    return _resolve_locations(script_location, parts, project)


def _pyproject_options(path: Path) -> tuple[str | None, list[str] | None] | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    tool = data.get("tool", {})
    section = tool.get("alembic") if isinstance(tool, dict) else None
    if not isinstance(section, dict):
        return None
    here = str(path.parent)
    script = section.get("script_location")
    script = script.replace("%(here)s", here) if isinstance(script, str) else None
    raw = section.get("version_locations")
    locations = [str(v).replace("%(here)s", here) for v in raw] if isinstance(raw, list) else None
    if script is None and not locations:
        return None
    return script, locations


def _split(value: str, separator: str | None) -> list[str]:
    if separator is None:
        parts = _LEGACY_SPLIT.split(value)
    else:
        if separator not in _SEPARATORS:
            raise ValueError(f"unknown path separator {separator!r}")
        parts = value.split(_SEPARATORS[separator])
    return [p.strip() for p in parts if p.strip()]


def _resolve_locations(
    script_location: str | None, locations: list[str] | None, project: Path
) -> tuple[Path, ...]:
    raw = locations if locations else ([f"{script_location}/versions"] if script_location else [])
    if not raw:
        raise ValueError("it names no migrations directory")
    resolved = []
    for item in raw:
        if ":" in item and not item.startswith("/"):
            raise ValueError(
                f"{item!r} is a package resource, which pgwarden does not import: "
                "set [targets.migrations] versions to the directory"
            )
        resolved.append(_absolute(Path(item), project))
    return tuple(dict.fromkeys(resolved))


def _absolute(path: Path, base: Path) -> Path:
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def resolve_alembic(
    config: Config, target: TargetConfig, settings: MigrationSettings, search_path: str
) -> Path:
    """The application's ``alembic`` executable: a path (relative to ``project``) or a name
    found on ``search_path`` (the child's ``PATH``)."""
    key = f"{settings_key(config, target)}.alembic"
    assert settings.project is not None
    if "/" in settings.alembic:
        candidate = _absolute(Path(settings.alembic), settings.project)
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            raise ConfigError(config.source, [f"{key}: {candidate} is not an executable file"])
        return candidate
    found = shutil.which(settings.alembic, path=search_path)
    if found is None:
        raise ConfigError(
            config.source,
            [
                f"{key}: {settings.alembic!r} is not on PATH ({search_path}); give the path of "
                "the application's own alembic (e.g. /srv/myproject/.venv/bin/alembic)"
            ],
        )
    return Path(found)

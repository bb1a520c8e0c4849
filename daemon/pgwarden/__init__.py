"""pgwarden: keeps a VPS's PostgreSQL safe and observable.

The package root only exposes the version; every capability lives in its own subpackage
(``pg``, ``backup``, ``storage``, ``catalog``, ``monitor``, ``migrate``, ``service``,
``control``) as laid out in DESIGN.md.
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module 'pgwarden' has no attribute {name!r}")
    # lazy import: importlib.metadata costs 0.035 s (measured) and only --version and a
    # manifest being written need the version
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("pgwarden")
    except PackageNotFoundError:  # running from a source tree without an install
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found

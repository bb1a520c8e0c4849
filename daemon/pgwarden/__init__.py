"""pgwarden: keeps a VPS's PostgreSQL safe and observable.

The package root only exposes the version; every capability lives in its own subpackage
(``pg``, ``backup``, ``storage``, ``catalog``, ``monitor``, ``migrate``, ``service``,
``control``) as laid out in DESIGN.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgwarden")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

"""Reading one secret's key group from a config table: ``<key>_env``, ``<key>_file``,
``<key>_credential`` or, only where plaintext secrets are allowed, an inline ``<key>``.

Shared by ``[[offsite]]`` (S3 keys) and ``[[notify]]`` (ping URLs, webhook secrets): at most one
source per secret, an environment variable name that can exist, a credential name that is one
file name; every problem reported with its key, never with the secret's value.
"""

from __future__ import annotations

import re

from pgwarden.config.offsite import SecretSource
from pgwarden.config.reader import Reader

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_secret_source(
    r: Reader, key: str, plaintext_ok: bool, *, inline_ok: bool = True, noun: str = "secret"
) -> SecretSource:
    """``<key>_env``, ``<key>_file``, ``<key>_credential`` or inline ``<key>``: at most one.

    An inline value is refused unless ``inline_ok`` and ``plaintext_ok`` (``[daemon]
    allow_plaintext_passwords``); ``noun`` names the secret in that refusal."""
    env = r.opt_str(f"{key}_env")
    if env is not None and not ENV_NAME.fullmatch(env):
        r.error(f"{key}_env", f"must be an environment variable name (got {env!r})")
        env = None
    credential = r.opt_str(f"{key}_credential")
    if credential is not None and ("/" in credential or credential in ("", ".", "..")):
        r.error(f"{key}_credential", f"not a valid credential name (got {credential!r})")
        credential = None
    source = SecretSource(
        env=env, file=r.opt_path(f"{key}_file"), credential=credential, value=r.secret(key)
    )
    if source.value is not None and not (inline_ok and plaintext_ok):
        also = " (or set daemon.allow_plaintext_passwords)" if inline_ok else ""
        r.error(
            key,
            f"a {noun} in the config file is refused; use {key}_env, {key}_file or "
            f"{key}_credential{also}",
        )
    given = [
        name
        for name, v in (
            (f"{key}_env", source.env),
            (f"{key}_file", source.file),
            (f"{key}_credential", source.credential),
            (key, source.value),
        )
        if v is not None
    ]
    if len(given) > 1:
        r.error(given[1], f"choose one source for {key}, not {' and '.join(given)}")
    return source

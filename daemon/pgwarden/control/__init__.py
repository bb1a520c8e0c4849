"""The local control socket: operate the running daemon without restarting it.

``protocol`` (JSON lines framing, error codes, argument checks), ``calls`` (what a handler
sees of the daemon), ``commands`` (the command table), ``peers`` (SO_PEERCRED policy),
``redact`` (no secret in any answer), ``server`` (the socket and its threads), ``client``
and ``ctl_cli`` + ``render`` (``pgwarden ctl``).  See ``README-ctl.md`` for the commands.
"""

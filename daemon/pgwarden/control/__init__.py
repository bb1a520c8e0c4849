"""The local control socket: operate the running daemon without restarting it.

``api`` (the :class:`~pgwarden.control.api.DaemonApi` protocol the service implements, and the
typed values it exchanges: the only way to the service), ``protocol`` (JSON lines framing,
error codes, argument checks), ``calls`` (what a handler sees: a ``Call``), ``commands`` (the
command table: typed answers to JSON), ``peers`` (SO_PEERCRED policy), ``server`` (the
socket and its threads), ``client`` and ``ctl_cli`` + ``render`` (``pgwarden ctl``).  Every answer passes :func:`pgwarden.redaction.redact_value` on its way
out.  The commands are described in README.md, "The control socket".
"""

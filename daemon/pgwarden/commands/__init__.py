"""Handlers of the ``pgwarden`` subcommands, one module per group; each returns an exit code.

``cli.py`` names them as ``module:function`` strings and imports a handler only when its
command runs, so that ``pgwarden --help`` stays fast.
"""

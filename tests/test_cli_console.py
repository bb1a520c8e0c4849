"""The ``pgwarden`` command's entry point (:func:`pgwarden.cli.console`): the command's exit
status unchanged, its objects frozen out of the collector before the process exits."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import gc, sys
from pgwarden import cli
sys.argv = ["pgwarden", "config", "check", "-c", "/nonexistent/pgwarden.toml"]
code = cli.console()
print(code, cli.main(sys.argv[1:]), gc.get_freeze_count() > 1000)
"""


def test_the_command_is_console_and_keeps_the_exit_status() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pgwarden": "pgwarden.cli:console"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    console_code, main_code, frozen = out.stdout.split()
    assert console_code == main_code != "0"
    assert frozen == "True"
    assert "/nonexistent/pgwarden.toml" in out.stderr

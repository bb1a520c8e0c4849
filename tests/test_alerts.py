"""The alert rules in packaging/prometheus: ``promtool check rules`` is clean, ``promtool test
rules`` passes, and every alert has a test that sees it fire.

promtool is a real requirement: its absence fails these tests (apt-get install prometheus).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

PROMETHEUS_DIR = Path(__file__).resolve().parent.parent / "packaging" / "prometheus"
RULES = PROMETHEUS_DIR / "pgwarden-rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "pgwarden-rules.test.yml"

#: the alerts issue 6 asks for, at least
REQUIRED = {
    "PgwardenBackupTooOld",
    "PgwardenBackupFailing",
    "PgwardenVerificationTooOld",
    "PgwardenVerificationFailed",
    "PgwardenPgDumpIncompatible",
    "PgwardenStorageSpaceLow",
    "PgwardenConnectionSaturationHigh",
    "PgwardenApplicationPoolAtLimit",
    "PgwardenPgBouncerClientsWaiting",
    "PgwardenDown",
    "PgwardenAbsent",
    # issue 15: off-site copies, per target and destination
    "PgwardenNoOffsiteCopy",
    "PgwardenOffsiteUploadFailing",
    "PgwardenOffsitePruneFailing",
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found is not None, "promtool is required (apt-get install prometheus)"
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROMETHEUS_DIR,
    )


def alerts_in_rules() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\w+)\s*$", RULES.read_text(), re.MULTILINE)


def alerts_seen_firing() -> set[str]:
    """Alert names that some ``eval_time`` of the test file expects to be firing."""
    seen = set()
    for block in re.split(r"^\s*- eval_time:", RULE_TESTS.read_text(), flags=re.MULTILINE)[1:]:
        name = re.search(r"alertname:\s*(\w+)", block)
        assert name is not None, block
        if re.search(r"exp_alerts:\s*\n\s*- exp_labels:", block):
            seen.add(name[1])
    return seen


def test_promtool_check_rules_is_clean() -> None:
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts_in_rules())} rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_fail_when_a_threshold_changes(tmp_path: Path) -> None:
    """The tests are sharp: a 27 h instead of 26 h threshold makes them fail."""
    rules = RULES.read_text()
    assert "26 * 3600" in rules
    (tmp_path / RULES.name).write_text(rules.replace("26 * 3600", "27 * 3600"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PgwardenBackupTooOld" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_the_required_ones_exist() -> None:
    names = alerts_in_rules()
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED, REQUIRED - set(names)
    assert set(names) <= alerts_seen_firing(), set(names) - alerts_seen_firing()


def test_every_alert_is_documented() -> None:
    readme = (PROMETHEUS_DIR.parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(Pgwarden\w+)` \|", readme, re.MULTILINE))
    assert documented == set(alerts_in_rules())


def test_every_alert_has_severity_summary_and_description() -> None:
    chunks = re.split(r"^\s*- alert:", RULES.read_text(), flags=re.MULTILINE)[1:]
    assert len(chunks) == len(alerts_in_rules())
    for chunk in chunks:
        name = chunk.split()[0]
        assert re.search(r"severity: (critical|warning)\n", chunk), name
        assert "summary:" in chunk, name
        assert "description:" in chunk, name

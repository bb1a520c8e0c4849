"""What the off-site step adds to a backup, and the uploader's peak memory on a multi-GB object.

Part 1 builds the backup benchmark's database (``benchmarks/backup.py``'s ``build``: pgbench
data at ``--scale`` plus a pgvector table) on its own embedded PostgreSQL 18, starts
``moto_server`` on a loopback port (the S3 API; it keeps objects in memory), and runs
``--runs`` times, through the real CLI: ``pgwarden backup`` (the local backup), then
``pgwarden offsite sync`` to a plain destination and to an age-encrypted one.  Prints the
median of each and the off-site step as a fraction of the backup.

Part 2 generates a ``--big-gb`` GiB incompressible artifact and uploads it, plain and
encrypted, each in a child process through the same code the job runs
(:func:`pgwarden.backup.offsite._send_object`: the artifact streamed through the age stage into
a multipart upload, sha256 checked), and prints each child's peak RSS (``ru_maxrss``).

    .venv/bin/python benchmarks/offsite.py [--scale 60] [--vectors 100000] [--runs 3] [--big-gb 2]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyrage  # noqa: E402
from benchmarks.backup import DB, build  # noqa: E402
from tests.pgservers import start_pg18, temp_base  # noqa: E402
from tests.s3server import KEY_ID, KEY_ID_ENV, REGION, SECRET, SECRET_ENV, S3Server  # noqa: E402

from pgwarden.backup.offsite import CopyRequest, _send_object  # noqa: E402
from pgwarden.catalog import BackupStatus  # noqa: E402
from pgwarden.catalog.records import BackupRecord  # noqa: E402
from pgwarden.config.offsite import OffsiteConfig, OffsiteEncryption, SecretSource  # noqa: E402
from pgwarden.storage import open_object_store  # noqa: E402

MIB = 1024 * 1024


def destination_toml(name: str, endpoint: str, bucket: str, recipient: str | None) -> str:
    text = (
        f'[[offsite]]\nname = "{name}"\nbucket = "{bucket}"\nendpoint_url = "{endpoint}"\n'
        f'region = "{REGION}"\naddressing_style = "path"\n'
        f'access_key_id_env = "{KEY_ID_ENV}"\nsecret_access_key_env = "{SECRET_ENV}"\n'
    )
    if recipient is not None:
        text += f'  [offsite.encryption]\n  recipients = ["{recipient}"]\n'
    return text


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def part1(args: argparse.Namespace, s3: S3Server, recipient: str) -> None:
    base = temp_base("pgwarden-bench-")
    server = start_pg18(base)
    work = Path(tempfile.mkdtemp(prefix="pgwarden-bench-offsite-", dir="/tmp"))
    try:
        t0 = time.monotonic()
        build(server, args.scale, args.vectors)
        size = int(server.execute(f"SELECT pg_database_size('{DB}')")[0][0])  # type: ignore[call-overload]
        print(f"built {DB}: {size / 1e9:.2f} GB in {time.monotonic() - t0:.0f} s")
        s3.bucket("bench-plain")
        s3.bucket("bench-age")
        config = work / "pgwarden.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{work}/state"\nlog_level = "warning"\n'
            f'[storage]\npath = "{work}/backups"\n'
            f'[[targets]]\nname = "bench"\ndsn = "{server.uri(DB)}"\n'
            f'bin_dir = "{server.bin_dir}"\n'
            + destination_toml("plain", s3.endpoint, "bench-plain", None)
            + destination_toml("age", s3.endpoint, "bench-age", recipient)
        )
        pgwarden = str(Path(sys.executable).parent / "pgwarden")
        results: dict[str, list[float]] = {"backup": [], "offsite plain": [], "offsite age": []}
        for run in range(args.runs):
            results["backup"].append(timed([pgwarden, "backup", "-c", str(config), "bench"]))
            for name in ("plain", "age"):
                results[f"offsite {name}"].append(
                    timed(
                        [
                            pgwarden,
                            "offsite",
                            "sync",
                            "-c",
                            str(config),
                            "bench",
                            "--destination",
                            name,
                        ]
                    )
                )
            made = sorted((work / "backups" / "bench").glob("*.zst"))[-1]
            print(
                f"run {run + 1}: artifact {made.stat().st_size / 1e6:.0f} MB, "
                + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in results.items())
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\n{'step':<14} {'median s':>9}")
        for key, value in med.items():
            print(f"{key:<14} {value:9.2f}")
        for name in ("plain", "age"):
            ratio = med[f"offsite {name}"] / med["backup"]
            print(f"off-site ({name}) / backup time: {ratio:.3f}")
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def upload_child(artifact: Path, endpoint: str, bucket: str, recipient: str | None) -> None:
    """In a child process: one upload through pgwarden's code; print peak RSS as JSON."""
    destination = OffsiteConfig(
        name="big",
        bucket=bucket,
        endpoint_url=endpoint,
        region=REGION,
        addressing_style="path",
        access_key_id=SecretSource(env=KEY_ID_ENV),
        secret_access_key=SecretSource(env=SECRET_ENV),
        encryption=None if recipient is None else OffsiteEncryption((recipient,)),
        timeout=600,
    )
    now = datetime.now(UTC)
    record = BackupRecord(
        "ab" * 16, "big", "big", now, now, BackupStatus.COMPLETE, (), "custom", None,
        artifact.name, artifact.stat().st_size, None, False, None, None, None, 1, None, None,
    )  # fmt: skip
    sha = subprocess.run(
        ["sha256sum", str(artifact)], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    store = open_object_store(destination)
    request = CopyRequest(record, destination, store, None, None, None)  # type: ignore[arg-type]
    start = time.monotonic()
    put = _send_object(request, artifact, {"sha256": sha})
    seconds = time.monotonic() - start
    store.delete(put.key)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "size": put.size,
                "parts": put.parts,
                "part_size": put.part_size,
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
            }
        )
    )


def part2(args: argparse.Namespace, s3: S3Server, recipient: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="pgwarden-bench-big-", dir="/tmp"))
    try:
        artifact = work / "20261203T000000Z-abababab.dump"
        with artifact.open("wb") as out:
            for _ in range(int(args.big_gb * 1024)):
                out.write(os.urandom(MIB))
        s3.bucket("bench-big")
        for label, key in (("plain", None), ("age", recipient)):
            argv = [sys.executable, __file__, "--upload-child", str(artifact), s3.endpoint]
            argv += ["bench-big", key or ""]
            done = subprocess.run(argv, check=True, capture_output=True, text=True)
            facts = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"upload {label}: {facts['size'] / 2**30:.2f} GiB in {facts['parts']} parts of "
                f"{facts['part_size'] / MIB:.0f} MiB, {facts['seconds']:.1f} s, "
                f"peak RSS {facts['peak_rss_mib']:.0f} MiB"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--upload-child":
        artifact, endpoint, bucket, recipient = sys.argv[2:6]
        upload_child(Path(artifact), endpoint, bucket, recipient or None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=60)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--skip-backup", action="store_true", help="part 2 only")
    args = parser.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    os.environ.update({KEY_ID_ENV: KEY_ID, SECRET_ENV: SECRET, "AWS_EC2_METADATA_DISABLED": "1"})
    compileall.compile_dir(str(ROOT / "daemon" / "pgwarden"), quiet=1)
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    s3 = S3Server(base=temp_base("pgwarden-bench-moto-"))
    s3.start()
    try:
        if not args.skip_backup:
            part1(args, s3, recipient)
        if args.big_gb > 0:
            part2(args, s3, recipient)
    finally:
        s3.stop()
        shutil.rmtree(s3.base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

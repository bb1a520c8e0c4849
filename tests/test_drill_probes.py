"""A drill's vector probes: the probes of one column share one scan of its table, and each
probe is still judged on its own (a right one passes beside a missing row and a wrong list)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pgwarden.archive.manifest import Manifest, VectorProbe
from pgwarden.pg import introspect
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.checks import QueryCanceller, counts_and_probes
from tests.helpers import target_env
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db


def _probe(key: str, k: int, neighbours: tuple[str, ...]) -> VectorProbe:
    return VectorProbe("public", "documents", "embedding", "id", key, k, neighbours)


def test_the_probes_of_a_column_share_a_scan_and_are_judged_one_by_one(
    pg18: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "drill_probes", rows=300)
    env = target_env(workdir, pg18, "drill_probes", backup={"retries": 0})
    manifest = Manifest.load(env.backup().manifest_path)
    with pg18.connect("drill_probes") as conn, conn.transaction():
        # the one-probe-one-search answers, which the shared scan must give
        near = {
            (key, k): introspect.probe_neighbours(
                conn, "public", "documents", "embedding", "id", key, k
            )
            for key, k in (("7", 5), ("150", 5), ("299", 3))
        }
    assert all(near.values())
    right = _probe("7", 5, tuple(near[("7", 5)] or ()))
    other_k = _probe("299", 3, tuple(near[("299", 3)] or ()))
    wrong = _probe("150", 5, tuple(reversed(near[("150", 5)] or ())))
    missing = _probe("100000", 5, ("1", "2", "3", "4", "5"))
    probes = (right, wrong, missing, other_k)
    manifest = dataclasses.replace(manifest, vector_probes=probes)

    counts, judged = counts_and_probes(
        ConnSpec(pg18.dsn("drill_probes")), manifest, QueryCanceller(None), jobs=2
    )

    assert counts.passed, counts
    assert not judged.passed
    assert judged.detail == "2 of 4 probes returned other neighbours"
    failed = {f["item"]: f for f in judged.failures}
    assert set(failed) == {
        "public.documents.embedding id=150",
        "public.documents.embedding id=100000",
    }
    assert failed["public.documents.embedding id=100000"]["actual"] == "probe row missing"
    assert failed["public.documents.embedding id=150"]["actual"] == list(near[("150", 5)] or ())

    honest = dataclasses.replace(manifest, vector_probes=(right, other_k))
    _, passed = counts_and_probes(
        ConnSpec(pg18.dsn("drill_probes")), honest, QueryCanceller(None), jobs=1
    )
    assert passed.passed and passed.detail == "2 probes, exact search", passed

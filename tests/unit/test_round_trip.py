"""file -> table -> dataset version -> verify, for every file format and every database."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from raymlp import load_job, run_job
from raymlp.catalog import Catalog
from raymlp.context import Reporter
from raymlp.data.integrity import content_digest, file_sha256
from raymlp.data.verify import verify_against_source
from raymlp.storage import resolve_storage

from .test_data import DATABASES, awkward_table, database_url  # noqa: F401  (fixture)

FORMATS = ["csv", "parquet", "json"]


def write_source(folder, file_format: str) -> tuple[str, pa.Table]:
    table = awkward_table().drop_columns(["at", "day"])  # formats differ on dates; values stay exact
    table = table.append_column("n", pa.array(np.arange(table.num_rows), pa.int64()))
    path = folder / f"source.{'jsonl' if file_format == 'json' else file_format}"
    if file_format == "csv":
        pacsv.write_csv(table, path)
    elif file_format == "parquet":
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    return str(path), table


def job_file(folder, source: str, file_format: str, url: str, table_name: str):
    path = folder / "job.yaml"
    path.write_text(
        "version: 1\nname: roundtrip\n"
        f"data:\n  source: {{format: {file_format}, path: '{source}'}}\n"
        f"  collect: {{url: '{url}', table: {table_name}, mode: replace}}\n"
        "  dataset: {name: roundtrip}\n"
    )
    return path


@pytest.mark.parametrize("file_format", FORMATS)
def test_file_table_dataset_verify(tmp_path, raymlp_home, database_url, file_format):  # noqa: F811
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    source, expected = write_source(tmp_path, file_format)
    before = file_sha256(source)
    table_name = f"raymlp_rt_{uuid.uuid4().hex[:10]}"
    try:
        summary = run_job(
            load_job(job_file(tmp_path, source, file_format, database_url, table_name)), reporter=Reporter(quiet=True)
        )
        assert summary.dataset == "roundtrip@1" and summary.dataset_rows == expected.num_rows
        with Catalog(resolve_storage().catalog_url) as catalog:
            record = catalog.get_dataset_version("roundtrip")
        assert verify_against_source(record.manifest, database_url) == []
        # The version holds exactly the file's rows: same digest as the file read on its own.
        assert record.content_digest == content_digest(
            expected.select([column["name"] for column in record.manifest["schema"]])
        )
        assert file_sha256(source) == before

        engine = engine_for(database_url)
        with engine.begin() as connection:
            connection.execute(sa.text(f"UPDATE {table_name} SET amount = 7.5 WHERE n = 0"))
        assert verify_against_source(record.manifest, database_url) == [
            "the source's content digest differs from the version's (same row count, different values)"
        ]
        with engine.begin() as connection:
            connection.execute(sa.text(f"DELETE FROM {table_name} WHERE n = 1"))
        problems = verify_against_source(record.manifest, database_url)
        assert (
            problems[0]
            == f"the source now has {expected.num_rows - 1} rows; the version was made from {expected.num_rows}"
        )
        engine.dispose()
    finally:
        engine = engine_for(database_url)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table_name}"))
        engine.dispose()


def test_verify_against_files_with_quarantine_and_a_changed_file(tmp_path, raymlp_home):
    csv = tmp_path / "people.csv"
    csv.write_text("id,age\n1,30\n2,-4\n3,41\n4,oops\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: people\n"
        f"data:\n  source: {{format: csv, path: '{csv}'}}\n  dataset: {{name: people}}\n"
        "  schema: {on_error: quarantine, columns: {id: {type: int}, age: {type: int, min: 0}}}\n"
    )
    summary = run_job(load_job(job), reporter=Reporter(quiet=True))
    assert (summary.dataset_rows, summary.quarantined_rows) == (2, 2)
    with Catalog(resolve_storage().catalog_url) as catalog:
        record = catalog.get_dataset_version("people")
    assert verify_against_source(record.manifest) == []
    aside = pd.read_parquet(f"{record.path}/quarantine.parquet")
    assert aside[["_raymlp_source", "_raymlp_row", "_raymlp_reason"]].values.tolist() == [
        [str(csv), 3, "age: below min 0"],
        [str(csv), 5, "age: not a valid int"],
    ]
    csv.write_text("id,age\n1,30\n2,-4\n3,42\n4,oops\n")
    assert verify_against_source(record.manifest) == [
        f"source file {csv} changed since the version was made (sha256 differs)"
    ]


def test_malformed_csv_lines_are_quarantined_with_lines_and_reasons(tmp_path, raymlp_home, monkeypatch):
    """1% malformed lines of every kind: the version keeps the good rows, quarantine the rest,
    and good + quarantined = records in the source (read in many ranges, as a large file is)."""
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "4000")
    rng = np.random.default_rng(5)
    lines = ["id,amount,label"]
    broken: dict[int, str] = {}
    for number in range(2, 2002):  # line numbers 2..2001: 2000 records
        lines.append(f"{number},{rng.random() * 100:.3f},{rng.choice(['a', 'b'])}")
    kinds = {
        "fields": ("{n},1.0,a,extra", "expected 3 fields, found 4"),
        "quote": ('{n},1.0,"a"b', "malformed CSV: ',' expected after '\"'"),
        "utf8": ("{n},1.0,\udcff\udcfe", "not valid UTF-8"),
        "range": ("{n},-5.0,a", "amount: below min 0"),
        "type": ("{n},lots,a", "amount: not a valid float"),
        "unclosed": ('{n},1.0,"a', "malformed CSV: a quoted field is never closed"),
    }
    for index, number in enumerate(rng.choice(np.arange(2, 2002), size=24, replace=False)):
        kind = list(kinds)[index % len(kinds)]
        template, reason = kinds[kind]
        lines[number - 1] = template.format(n=number)
        broken[int(number)] = reason
    csv = tmp_path / "events.csv"
    csv.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    digest_before = file_sha256(csv)
    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: events\n"
        f"data:\n  source: {{format: csv, path: '{csv}'}}\n  dataset: {{name: events}}\n"
        "  schema: {on_error: quarantine, columns: {id: {type: int}, amount: {type: float, min: 0}, label: {type: string}}}\n"
    )
    summary = run_job(load_job(job), reporter=Reporter(quiet=True))
    assert summary.dataset_rows + summary.quarantined_rows == 2000
    assert summary.quarantined_rows == 24
    with Catalog(resolve_storage().catalog_url) as catalog:
        record = catalog.get_dataset_version("events")
    aside = pd.read_parquet(f"{record.path}/quarantine.parquet")
    assert dict(zip(aside["_raymlp_row"], aside["_raymlp_reason"])) == broken
    assert set(aside["_raymlp_source"]) == {str(csv)}
    from raymlp.data.versions import read_version_table

    kept = read_version_table(record.path, record.manifest).column("id").to_pylist()
    assert not set(kept) & set(broken) and len(kept) == 1976
    assert record.manifest["validation"]["rows_in"] == 2000
    assert verify_against_source(record.manifest) == []
    assert file_sha256(csv) == digest_before

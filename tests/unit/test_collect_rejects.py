"""A dirty CSV collected into a database with `on_error: quarantine`: every good record is loaded,
every malformed one is kept aside in `<table>__rejects` (file, line, reason, raw bytes), the
version converted from the table carries them into its quarantine beside the out-of-range rows,
and every count reconciles. With `on_error: fail` the collect still refuses and writes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raymlp import load_job, run_job
from raymlp.catalog import Catalog
from raymlp.context import Reporter
from raymlp.data.integrity import file_sha256
from raymlp.data.verify import verify_against_source
from raymlp.data.versions import read_version_table
from raymlp.errors import WorkFailed
from raymlp.storage import resolve_storage

from .test_data import database_url  # noqa: F401  (fixture)

DIRTY = (
    b"id,name,score\n"
    b"1,alpha,10\n"
    b"2,beta,20\n"
    b"3,gamma\n"  # line 4: a short line
    b"4,delta,40,extra\n"  # line 5: an extra field
    b"5,\xff\xfepsilon,50\n"  # line 6: bytes that are not UTF-8
    b'6,"zeta"x,60\n'  # line 7: text after a closing quote
    b"7,eta,700\n"  # line 8: out of range (score max 100): convert's quarantine
    b"8,theta,80\n"
    b'9,"iota,90\n'  # line 10: a quote never closed
    b"10,kappa,100\n"
    b'11,"lambda, quoted",11\n'
)
MALFORMED_LINES = {
    4: "expected 3 fields, found 2",
    5: "expected 3 fields, found 4",
    6: "not valid UTF-8",
    7: "malformed CSV",
    10: "a quoted field is never closed",
}
GOOD_IDS = [1, 2, 8, 10, 11]


class Lines(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def stage(self, name: str, message: str) -> None:
        self.lines.append(f"{name}: {message}")


def _job(folder, source, url: str, table: str, on_error: str):
    path = folder / f"dirty-{on_error}.yaml"
    path.write_text(
        f"version: 1\nname: dirty\ndata:\n  source: {{format: csv, path: '{source}'}}\n"
        f"  collect: {{url: '{url}', table: {table}, mode: replace}}\n"
        "  dataset: {name: dirty}\n"
        f"  schema: {{columns: {{score: {{type: int, min: 0, max: 100}}}}, on_error: {on_error}}}\n"
    )
    return load_job(path)


def _tables(url: str, *names: str) -> dict[str, list[dict]]:
    """The rows of each table that exists (absent tables are left out)."""
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    engine = engine_for(url)
    found = {}
    try:
        with engine.connect() as connection:
            for name in names:
                if sa.inspect(connection).has_table(name):
                    found[name] = [dict(row._mapping) for row in connection.execute(sa.text(f"SELECT * FROM {name}"))]
    finally:
        engine.dispose()
    return found


def _drop(url: str, *names: str) -> None:
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    engine = engine_for(url)
    with engine.begin() as connection:
        for name in names:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def test_a_dirty_csv_collected_keeps_every_good_row_and_every_reject(tmp_path, raymlp_home, monkeypatch, database_url):  # noqa: F811
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "40")  # several ranges: line numbers made absolute
    source = tmp_path / "dirty.csv"
    source.write_bytes(DIRTY)
    before = file_sha256(source)
    table = f"raymlp_rj_{uuid.uuid4().hex[:10]}"
    rejects = f"{table}__rejects"
    try:
        with pytest.raises(WorkFailed, match=r"(?s)malformed records in the source.*dirty.csv:4: expected 3 fields"):
            run_job(
                _job(tmp_path, source, database_url, table, "fail"), only=["collect"], reporter=Reporter(quiet=True)
            )
        assert _tables(database_url, table, rejects) == {}, "a refused collect writes nothing"

        reporter = Lines()
        summary = run_job(_job(tmp_path, source, database_url, table, "quarantine"), reporter=reporter)
        assert file_sha256(source) == before, "the source file is byte-identical"
        collect_line = next(line for line in reporter.lines if line.startswith("collect:"))
        assert "6 rows -> " in collect_line and f"5 malformed records -> {rejects} (11 records read)" in collect_line, (
            collect_line
        )
        assert (summary.collected_rows, summary.rejected_rows) == (6, 5)

        stored = _tables(database_url, table, rejects)
        assert sorted(row["id"] for row in stored[table]) == sorted(GOOD_IDS + [7])  # 7 is out of range, not malformed
        kept = {row["line"]: row for row in stored[rejects]}
        assert sorted(kept) == sorted(MALFORMED_LINES)
        for line, reason in MALFORMED_LINES.items():
            assert reason in kept[line]["reason"] and kept[line]["file"] == str(source.resolve())
        assert bytes(kept[6]["raw"]) == b"5,\xff\xfepsilon,50" and bytes(kept[10]["raw"]) == b'9,"iota,90'

        with Catalog(resolve_storage().catalog_url) as catalog:
            collection = catalog.list_collections(table)[-1]
            record = catalog.get_dataset_version("dirty")
        assert (collection.row_count, collection.rows_rejected) == (6, 5)
        manifest = record.manifest
        validation = manifest["validation"]
        assert (
            validation["rows_in"],
            validation["rows_kept"],
            validation["rows_quarantined"],
            validation["rows_malformed"],
            validation["rows_invalid"],
        ) == (11, 5, 6, 5, 1)
        assert manifest["source"]["rows"] == 11 and manifest["source"]["rejects_table"] == rejects
        assert sorted(read_version_table(record.path, manifest).column("id").to_pylist()) == GOOD_IDS
        quarantine = pq.read_table(Path(record.path) / "quarantine.parquet").to_pylist()
        assert len(quarantine) == 6
        by_line = {row["_raymlp_row"]: row for row in quarantine if row["_raymlp_source"] == str(source.resolve())}
        assert sorted(by_line) == sorted(MALFORMED_LINES)
        assert by_line[6]["_raymlp_raw"] == b"5,\xff\xfepsilon,50"
        out_of_range = [row for row in quarantine if row["_raymlp_source"] != str(source.resolve())]
        assert len(out_of_range) == 1 and "score: above max 100" in out_of_range[0]["_raymlp_reason"], out_of_range
        assert str(out_of_range[0]["score"]) == "700"

        assert verify_against_source(manifest, database_url) == []
    finally:
        _drop(database_url, table, rejects)


def test_the_rejects_table_follows_the_tables_mode_and_fails_with_it(database_url):  # noqa: F811
    """append adds to both, replace swaps both (without rejects kept, the old ones go), fail refuses
    an existing rejects table, and a load that fails leaves neither changed."""
    import pyarrow as pa

    from raymlp.data.sql import LoadPiece, read_rejects, write_tables

    bad = pa.table(
        {
            "_raymlp_source": ["f.csv"],
            "_raymlp_row": [3],
            "_raymlp_reason": ["expected 1 fields, found 2"],
            "_raymlp_text": ["a\x00b"],
            "_raymlp_raw": [b"a\x00b\xff"],
        }
    )
    table = f"raymlp_rj_{uuid.uuid4().hex[:10]}"

    def piece() -> LoadPiece:
        return LoadPiece(pa.table({"x": [1, 2]}), rejects=bad)

    def failing():
        yield piece()
        raise WorkFailed("the source went away")

    try:
        assert write_tables(database_url, table, [piece()], "fail", keep_rejects=True).rejected == 1
        with pytest.raises(WorkFailed, match="already exists"):
            write_tables(database_url, table, [piece()], "fail", keep_rejects=True)
        write_tables(database_url, table, [piece()], "append", keep_rejects=True)
        assert read_rejects(database_url, table).column("_raymlp_raw").to_pylist() == [b"a\x00b\xff"] * 2
        with pytest.raises(WorkFailed, match="went away"):
            write_tables(database_url, table, failing(), "append", keep_rejects=True)
        assert read_rejects(database_url, table).num_rows == 2 and len(_tables(database_url, table)[table]) == 4
        write_tables(database_url, table, [piece()], "replace", keep_rejects=True)
        assert read_rejects(database_url, table).num_rows == 1
        write_tables(database_url, table, [LoadPiece(pa.table({"x": [1]}))], "replace")
        assert read_rejects(database_url, table) is None, "a replaced table's rejects go with it"
        with pytest.raises(WorkFailed, match="went away"):
            write_tables(database_url, table, failing(), "append", keep_rejects=True)
        assert read_rejects(database_url, table) is None and len(_tables(database_url, table)[table]) == 1
    finally:
        _drop(database_url, table, f"{table}__rejects")

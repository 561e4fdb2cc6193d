"""A collect of files loads each range as soon as it is parsed: the table must hold exactly what a
convert straight from the files holds, whatever the ranges found (types that widen late, several
files with different columns, CSV lines sent to COPY as they are), and nothing when it fails."""

from __future__ import annotations

import uuid

import pytest

from raymlp import load_job, run_job
from raymlp.catalog import Catalog
from raymlp.context import Reporter
from raymlp.data.integrity import file_sha256
from raymlp.errors import WorkFailed
from raymlp.storage import resolve_storage

from ..conftest import require_service
from .test_data import DATABASES, database_url  # noqa: F401  (fixture)

POSTGRES_URL = DATABASES["postgresql"]


@pytest.fixture
def postgres(raymlp_home) -> str:
    require_service(POSTGRES_URL, "postgresql")
    return POSTGRES_URL


class Lines(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def stage(self, name: str, message: str) -> None:
        self.lines.append(f"{name}: {message}")


def _job(folder, name: str, source: str, url: str | None = None, table: str | None = None):
    path = folder / f"{name}.yaml"
    collect = f"  collect: {{url: '{url}', table: {table}, mode: replace}}\n" if url else ""
    path.write_text(
        f"version: 1\nname: {name}\ndata:\n  source: {{format: csv, path: '{source}'}}\n{collect}"
        f"  dataset: {{name: {name}}}\n"
    )
    return load_job(path)


def _collect_then_compare(tmp_path, url: str, source: str) -> tuple[list[str], dict, dict]:
    """Collect `source` into a table and convert the table; convert `source` directly too.
    Returns the collect's report lines and both versions' manifests."""
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    table = f"raymlp_sc_{uuid.uuid4().hex[:10]}"
    reporter = Lines()
    try:
        run_job(_job(tmp_path, "viatable", source, url, table), reporter=reporter)
        run_job(_job(tmp_path, "direct", source), reporter=Reporter(quiet=True))
        with Catalog(resolve_storage().catalog_url) as catalog:
            via_table = catalog.get_dataset_version("viatable").manifest
            direct = catalog.get_dataset_version("direct").manifest
    finally:
        engine = engine_for(url)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
    return reporter.lines, via_table, direct


def _same_rows(via_table: dict, direct: dict) -> None:
    assert via_table["row_count"] == direct["row_count"]
    assert via_table["content_digest"] == direct["content_digest"]


def test_csv_lines_go_to_copy_as_they_are_and_read_back_exactly(tmp_path, postgres, monkeypatch):
    """Values whose text COPY and the parser must read alike: quoted delimiters, doubled quotes,
    "" (empty text) against an empty field (null), NA and null as text, booleans, exponents,
    NaN and infinities, leading zeros, dates and timestamps, Unicode."""
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "300")  # many ranges
    rows = ["id,text,flag,amount,code,day,at"]
    texts = ['"a, b"', '"say ""hi"""', '""', "", "NA", "null", "ünï ✓", "plain"]
    amounts = ["1e3", "-0.0", "NaN", "inf", "-Infinity", "", "2.5", "1.0000000000000002"]
    for number in range(200):
        rows.append(
            f"{number},{texts[number % 8]},{['true', 'False', ''][number % 3]},{amounts[number % 8]},"
            f"{['007', '-3', ''][number % 3]},2024-02-{1 + number % 28:02d},"
            f"{['2024-02-29 23:59:59.123456', '1999-01-01T00:00:00', ''][number % 3]}"
        )
    source = tmp_path / "tricky.csv"
    source.write_text("\n".join(rows) + "\n")
    before = file_sha256(source)
    lines, via_table, direct = _collect_then_compare(tmp_path, postgres, str(source))
    assert "of the source's CSV lines" in next(line for line in lines if line.startswith("collect:"))
    _same_rows(via_table, direct)
    assert file_sha256(source) == before


def test_crlf_lines_are_written_out_again(tmp_path, postgres):
    source = tmp_path / "windows.csv"
    source.write_bytes(b'id,name\r\n1,a\r\n2,"b, c"\r\n3,\r\n')
    lines, via_table, direct = _collect_then_compare(tmp_path, postgres, str(source))
    collect_line = next(line for line in lines if line.startswith("collect:"))
    assert "COPY FROM STDIN" in collect_line and "of the source's CSV lines" not in collect_line
    _same_rows(via_table, direct)


def _widening_file(path, late: str) -> None:
    """`sparse` is empty until late in the file; `number` is whole until late, then `late`."""
    rows = ["id,sparse,number"]
    for number in range(400):
        rows.append(f"{number},{number if number >= 390 else ''},{late if number == 395 else number}")
    path.write_text("\n".join(rows) + "\n")


def test_types_that_widen_after_rows_were_loaded(tmp_path, raymlp_home, monkeypatch, database_url):  # noqa: F811
    """PostgreSQL widens the staging table in place where loaded values keep their values
    (null-only columns, int -> float); otherwise (int -> text, or other databases) the collect
    starts over reading the files whole. Either way the table is the file's rows exactly."""
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "200")
    for late, in_place in (("2.5", True), ("n/a", False)):
        source = tmp_path / f"widening-{late.replace('/', '')}.csv"
        _widening_file(source, late)
        lines, via_table, direct = _collect_then_compare(tmp_path, database_url, str(source))
        _same_rows(via_table, direct)
        started_over = any("reading the files whole" in line for line in lines)
        assert started_over == (not in_place or not database_url.startswith("postgresql")), lines
        types = {column["name"]: column["type"] for column in via_table["schema"]}
        assert types["sparse"] == "int64" and types["number"] == ("double" if in_place else "string")


def test_files_with_different_columns_and_a_late_malformed_line(tmp_path, postgres, monkeypatch):
    """A column that only a later file has is added to the staging table; a malformed line in a
    late range fails the collect with its absolute line number and leaves no table behind."""
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "200")
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_text("id,name\n" + "".join(f"{n},x{n}\n" for n in range(100)))
    (folder / "b.csv").write_text("id,name,extra\n" + "".join(f"{n},y{n},{n * 2}\n" for n in range(100)))
    lines, via_table, direct = _collect_then_compare(tmp_path, postgres, str(folder))
    _same_rows(via_table, direct)
    assert [column["name"] for column in via_table["schema"]] == ["id", "name", "extra"]

    broken = tmp_path / "broken.csv"
    broken.write_text(
        "id,name\n" + "".join(f"{n},z{n}\n" for n in range(300)).replace("250,z250\n", "250,z250,extra\n")
    )
    table = f"raymlp_sc_{uuid.uuid4().hex[:10]}"
    engine = engine_for(postgres)
    count = sa.text(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = :name OR table_name LIKE '\\_raymlp\\_stage\\_%'"
    )
    with engine.connect() as connection:
        before = connection.execute(count, {"name": table}).scalar()
    with pytest.raises(
        WorkFailed, match=rf"malformed records in the source.*\n  {broken}:252: expected 2 fields, found 3"
    ):
        run_job(_job(tmp_path, "broken", str(broken), postgres, table), only=["collect"], reporter=Reporter(quiet=True))
    with engine.connect() as connection:
        after = connection.execute(count, {"name": table}).scalar()
    engine.dispose()
    assert after == before

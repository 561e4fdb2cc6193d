"""Files read as many small ranges in parallel give exactly what one whole-file read gives:
the same rows, types, digest, quarantine lines and reasons, whatever falls on a cut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlp.config.schema import SchemaConfig, SourceConfig
from raymlp.data.csvfile import REASON_COLUMN, ROW_COLUMN, SOURCE_COLUMN
from raymlp.data.integrity import content_digest, file_sha256
from raymlp.data.ranges import read_files, unify_types
from raymlp.errors import WorkFailed


@pytest.fixture
def tiny_ranges(monkeypatch):
    """Ranges of a few hundred bytes, so every test file is cut in many places."""
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "300")


def csv_source(*paths: Path) -> SourceConfig:
    return SourceConfig(format="csv", path=[str(path) for path in paths])


def read(paths: list[Path], rules: dict | None = None, **options):
    source = SourceConfig(format=options.pop("format", "csv"), path=[str(path) for path in paths])
    schema = None if rules is None else SchemaConfig.model_validate(rules)
    return read_files(paths, source, schema, keep_table=True, **options)


def test_cuts_inside_quoted_newlines_are_mended(tmp_path, tiny_ranges):
    path = tmp_path / "notes.csv"
    lines = ["id,note,score"]
    expected_notes = []
    for index in range(200):
        note = f'line one of {index}\nline two, with a comma\n"quoted" third' if index % 3 == 0 else f"plain {index}"
        expected_notes.append(note)
        lines.append(f'{index},"{note.replace(chr(34), chr(34) * 2)}",{index / 4}')
    path.write_text("\n".join(lines) + "\n")
    before = file_sha256(path)
    result = read([path])
    assert result.rows == result.records == 200
    assert result.table.column("note").to_pylist() == expected_notes
    assert result.table.column("id").to_pylist() == list(range(200))
    assert result.schema.field("score").type == pa.float64()
    assert result.content_digest == content_digest(result.table)
    assert file_sha256(path) == before == result.files[0]["sha256"]  # hashed from the bytes the ranges read


def test_types_that_change_late_in_a_file_are_unified_and_text_is_kept_exactly(tmp_path, tiny_ranges):
    path = tmp_path / "drift.csv"
    rows = [f"{i},{i},00{i},{i % 2 == 0}" for i in range(300)]
    rows[250] = "250,2.5,n/a,true"  # late float in an int column, late text in a number-like column
    path.write_text("a,b,code,flag\n" + "\n".join(rows) + "\n")
    result = read([path])
    assert result.schema.field("a").type == pa.int64()
    assert result.schema.field("b").type == pa.float64()
    assert result.schema.field("code").type == pa.string()
    assert result.schema.field("flag").type == pa.bool_()
    codes = result.table.column("code").to_pylist()
    assert codes[:3] == ["000", "001", "002"] and codes[250] == "n/a"  # never 0, 1, 2 from an int read
    assert result.table.column("b").to_pylist()[250] == 2.5
    assert result.content_digest == content_digest(result.table)


def test_malformed_lines_keep_their_absolute_line_numbers(tmp_path, tiny_ranges):
    path = tmp_path / "rough.csv"
    lines = ["id,value"] + [f"{i},{i * 2}" for i in range(500)]
    bad = {37: "37", 150: '150,"unterminated', 299: "299,1,2", 420: "420,\xff\xfe"}
    for line_index, text in bad.items():
        lines[line_index] = text
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    result = read([path])
    quarantine = result.quarantine.to_pylist()
    assert result.rows + len(quarantine) == len(lines) - 1 == result.records
    found = {row[ROW_COLUMN]: row[REASON_COLUMN] for row in quarantine}
    assert found == {
        38: "expected 2 fields, found 1",
        151: "malformed CSV: a quoted field is never closed",
        300: "expected 2 fields, found 3",
        421: "not valid UTF-8",
    }
    assert all(row[SOURCE_COLUMN] == str(path) for row in quarantine)
    kept = result.table.column("id").to_pylist()  # id i is on line i + 2
    assert kept == [i for i in range(500) if i + 2 not in found]


def test_the_same_file_read_whole_and_in_ranges_is_the_same(tmp_path, monkeypatch):
    path = tmp_path / "data.csv"
    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "id": np.arange(3000),
            "x": rng.normal(size=3000),
            "kind": rng.choice(["a", "b", 'with "quote"', "multi\nline"], 3000),
        }
    )
    from pyarrow import csv as pacsv

    pacsv.write_csv(table, path)
    whole = read([path])
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "500")
    cut = read([path], workers=3)
    assert whole.content_digest == cut.content_digest == content_digest(table)
    assert cut.table.equals(whole.table)
    assert whole.statistics == cut.statistics
    assert cut.statistics["kind"]["distinct"] == 4 and cut.statistics["id"]["max"] == 2999


def test_unique_holds_across_ranges(tmp_path, tiny_ranges):
    path = tmp_path / "ids.csv"
    ids = list(range(400))
    ids[350] = 3  # a duplicate of a value many ranges earlier
    ids[351] = 351
    path.write_text("id,v\n" + "\n".join(f"{i},{n}" for n, i in enumerate(ids)) + "\n")
    result = read([path], {"columns": {"id": {"type": "int", "unique": True}}, "on_error": "quarantine"})
    quarantine = result.quarantine.to_pylist()
    assert [(row[ROW_COLUMN], row[REASON_COLUMN]) for row in quarantine] == [(352, "id: duplicate value")]
    assert result.rows == 399 and result.invalid == 1


def test_on_error_fail_names_file_and_absolute_line(tmp_path, tiny_ranges):
    path = tmp_path / "ranged.csv"
    path.write_text("id,size\n" + "\n".join(f"{i},{-1 if i == 333 else 1}" for i in range(600)) + "\n")
    with pytest.raises(WorkFailed) as failure:
        read([path], {"columns": {"size": {"type": "int", "min": 0}}, "on_error": "fail"})
    assert f"{path}:335: size: below min 0" in str(failure.value)


def test_files_with_different_columns_are_one_schema(tmp_path, tiny_ranges):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("id,x\n" + "\n".join(f"{i},{i}" for i in range(100)) + "\n")
    second.write_text("id,y\n" + "\n".join(f"{i},y{i}" for i in range(100, 150)) + "\n")
    result = read([first, second])
    assert result.schema.names == ["id", "x", "y"] and result.rows == 150
    assert result.table.column("x").null_count == 50 and result.table.column("y").null_count == 100


def test_json_lines_in_ranges_with_bad_lines(tmp_path, tiny_ranges):
    path = tmp_path / "events.jsonl"
    lines = [json.dumps({"id": i, "name": f"n{i}", "score": i / 2}) for i in range(200)]
    lines[10] = "{not json"
    lines[120] = "[1, 2]"
    path.write_text("\n".join(lines) + "\n")
    result = read([path], format="json")
    assert result.records == 200 and result.rows == 198
    assert {row[ROW_COLUMN]: row[REASON_COLUMN].split(":")[0] for row in result.quarantine.to_pylist()} == {
        11: "not valid JSON",
        121: "a JSON list, not an object",
    }
    assert result.table.column("id").to_pylist()[:11] == list(range(10)) + [11]


def test_parquet_row_groups_are_ranges(tmp_path, monkeypatch):
    path = tmp_path / "groups.parquet"
    table = pa.table({"id": np.arange(10_000), "text": [f"t{i % 7}" for i in range(10_000)]})
    pq.write_table(table, path, row_group_size=1000)
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "4000")
    result = read([path], {"columns": {"id": {"type": "int", "max": 9998}}, "on_error": "quarantine"}, format="parquet")
    assert result.rows == 9999 and result.quarantine.column(ROW_COLUMN).to_pylist() == [10_000]
    assert result.content_digest == content_digest(table.slice(0, 9999))


def test_type_unification_rules():
    assert unify_types(pa.int64(), pa.float64()) == pa.float64()
    assert unify_types(pa.null(), pa.date32()) == pa.date32()
    assert unify_types(pa.date32(), pa.timestamp("s")) == pa.timestamp("s")
    assert unify_types(pa.bool_(), pa.int64()) == pa.string()
    assert unify_types(pa.timestamp("s"), pa.timestamp("ns")) == pa.timestamp("ns")


def test_progress_shows_rows_and_bytes_per_second(tmp_path, tiny_ranges):
    import io

    from rich.console import Console

    from raymlp.context import Reporter

    path = tmp_path / "progress.csv"
    path.write_text("id,v\n" + "\n".join(f"{i},{i}" for i in range(2000)) + "\n")
    piped = io.StringIO()
    reporter = Reporter(console=Console(file=piped, force_terminal=False, width=200), progress_every_s=0)
    with reporter.progress("convert", path.stat().st_size) as progress:
        read([path], progress=progress)
    lines = piped.getvalue().splitlines()
    assert len(lines) > 10  # one per range here; every few seconds in real use
    assert (
        lines[-1].strip().startswith("convert  ... 2,000 rows, 0.0 MB (")
        and "rows/s" in lines[-1]
        and "MB/s" in lines[-1]
    )
    terminal = io.StringIO()
    reporter = Reporter(console=Console(file=terminal, force_terminal=True, width=200))
    with reporter.progress("collect", path.stat().st_size) as progress:
        read([path], progress=progress)
    assert "collect" in terminal.getvalue()


def test_a_stream_of_chunks_reads_like_the_whole(tmp_path):
    from raymlp.data.ranges import read_stream

    rng = np.random.default_rng(2)
    table = pa.table(
        {
            "id": np.arange(20_000),
            "ok": rng.random(20_000) > 0.5,
            "note": rng.choice(["x", "with, comma", "two\nlines", ""], 20_000),
        }
    )
    body = "".join(
        f'{i},{"t" if ok else "f"},"{note}"\n'
        for i, ok, note in zip(table["id"].to_pylist(), table["ok"].to_pylist(), table["note"].to_pylist())
    ).encode()
    chunks = [body[start : start + 50_000] for start in range(0, len(body), 50_000)]
    # whole records per chunk, as the database reader cuts them
    whole, carry = [], b""
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n", 0, len(data))
        while data[: cut + 1].count(b'"') % 2:
            cut = data.rfind(b"\n", 0, cut)
        whole.append(data[: cut + 1])
        carry = data[cut + 1 :]
    whole.append(carry)
    parts = tmp_path / "parts"
    parts.mkdir()
    result = read_stream(
        iter(whole),
        ["id", "ok", "note"],
        {"id": pa.int64(), "ok": pa.bool_(), "note": pa.string()},
        "table t",
        booleans=(["t"], ["f"]),
        part_folder=parts,
        keep_table=True,
        workers=2,
    )
    assert result.rows == 20_000 and len(result.parts) > 5
    assert result.content_digest == content_digest(table)
    assert result.table.equals(table)


def test_statistics_merge_pieces_and_cap_distinct_counts():
    from raymlp.data.statistics import (
        DISTINCT_LIMIT,
        column_statistics,
        finish_statistics,
        merge_statistics,
        partial_statistics,
    )

    table = pa.table(
        {
            "id": np.arange(DISTINCT_LIMIT + 5),
            "kind": [f"k{i % 7}" for i in range(DISTINCT_LIMIT + 5)],
            "x": np.where(np.arange(DISTINCT_LIMIT + 5) % 2 == 0, np.nan, 1.0),
        }
    )
    whole = column_statistics(table)
    merged: dict = {}
    for start in range(0, table.num_rows, 997):
        merge_statistics(merged, partial_statistics(table.slice(start, 997)))
    assert finish_statistics(merged, table.schema) == whole
    assert whole["id"]["distinct_over"] == DISTINCT_LIMIT and "distinct" not in whole["id"]
    assert whole["id"]["min"] == 0 and whole["id"]["max"] == DISTINCT_LIMIT + 4
    assert whole["kind"] == {"nulls": 0, "distinct": 7}


def test_a_file_changed_while_it_is_read_fails_the_read(tmp_path, tiny_ranges):
    path = tmp_path / "moving.csv"
    path.write_text("id,v\n" + "\n".join(f"{i},{i}" for i in range(3000)) + "\n")
    changed = []

    def change_once(rows: int, size: int) -> None:
        if not changed:
            changed.append(True)
            with open(path, "r+b") as handle:  # same size, other bytes
                handle.seek(100)
                handle.write(b"9")

    with pytest.raises(WorkFailed, match="source files changed while they were read"):
        read([path], progress=change_once)

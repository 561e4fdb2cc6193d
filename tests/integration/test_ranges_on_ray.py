"""Ranges read as Ray tasks (how a cluster of several nodes reads them) give what threads give."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyarrow import csv as pacsv

from raymlp.config.schema import SchemaConfig, SourceConfig
from raymlp.data.csvfile import ROW_COLUMN
from raymlp.data.ranges import read_files


def test_ray_tasks_read_ranges_exactly_as_threads(ray_4_cpus, tmp_path, monkeypatch):
    path = tmp_path / "events.csv"
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "id": np.arange(5000),
            "x": rng.normal(size=5000),
            "note": rng.choice(["plain", "with, comma", "two\nlines"], 5000),
        }
    )
    pacsv.write_csv(table, path)
    text = path.read_text().splitlines(keepends=True)
    text[1200] = "broken,line,with,too,many,fields\n"
    path.write_text("".join(text))
    rules = SchemaConfig.model_validate({"columns": {"x": {"type": "float", "max": 2.5}}, "on_error": "quarantine"})
    source = SourceConfig(format="csv", path=str(path))
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "20000")
    on_threads = read_files([path], source, rules, part_folder=None, keep_table=True)
    monkeypatch.setenv("RAYMLP_READ_ON_RAY", "1")
    parts = tmp_path / "parts"
    parts.mkdir()
    on_ray = read_files([path], source, rules, part_folder=parts, keep_table=True)
    assert on_ray.content_digest == on_threads.content_digest
    assert on_ray.rows == on_threads.rows and on_ray.records == on_threads.records == 5000
    assert on_ray.quarantine.column(ROW_COLUMN).to_pylist() == on_threads.quarantine.column(ROW_COLUMN).to_pylist()
    assert on_ray.malformed == 1 and on_ray.invalid > 0
    assert len(on_ray.parts) > 5 and sorted(p.name for p in parts.iterdir()) == [p["path"] for p in on_ray.parts]

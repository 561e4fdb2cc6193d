"""Batch predict's plan: how a local Parquet input is cut into reads (whole row groups packed up to
a model call's rows, never across files, slices of a row group where there are too few groups),
and how a worker holds the package its scoring tasks share."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlp.serve.row_groups import RowGroupDatasource, plan_slices


def _write(path, rows: int, row_group: int, start: int = 0) -> str:
    pq.write_table(pa.table({"x": pa.array(range(start, start + rows), pa.float64())}), path, row_group_size=row_group)
    return str(path)


def _rows(slices) -> list[float]:
    """Every row the planned reads return, in order (the reads run here, as a Ray task would)."""
    tasks = RowGroupDatasource(slices).get_read_tasks(len(slices))
    return [value for task in tasks for table in task() for value in table.column("x").to_pylist()]


def test_whole_row_groups_are_packed_up_to_a_calls_rows_and_never_span_files(tmp_path):
    first = _write(tmp_path / "a.parquet", 1000, 100)
    second = _write(tmp_path / "b.parquet", 250, 100, start=1000)
    slices = plan_slices([first, second], rows_per_read=300, reads_wanted=2)
    assert [(s.path, s.groups, s.stop - s.start) for s in slices] == [
        (first, (0, 1, 2), 300),
        (first, (3, 4, 5), 300),
        (first, (6, 7, 8), 300),
        (first, (9,), 100),
        (second, (0, 1, 2), 250),
    ]
    assert _rows(slices) == list(range(1250))
    tasks = RowGroupDatasource(slices).get_read_tasks(1)
    assert [task.metadata.num_rows for task in tasks] == [300, 300, 300, 100, 250]


def test_a_row_group_larger_than_a_call_is_read_whole(tmp_path):
    path = _write(tmp_path / "big-groups.parquet", 1000, 500)
    slices = plan_slices([path], rows_per_read=100, reads_wanted=2)
    assert [(s.groups, s.start, s.stop) for s in slices] == [((0,), 0, 500), ((1,), 0, 500)]
    assert _rows(slices) == list(range(1000))


def test_fewer_row_groups_than_replicas_are_sliced_so_every_replica_scores(tmp_path):
    path = _write(tmp_path / "one-group.parquet", 1001, 10_000)
    slices = plan_slices([path], rows_per_read=65536, reads_wanted=4)
    assert len(slices) == 4 and {s.groups for s in slices} == {(0,)}
    assert [s.stop - s.start for s in slices] == [251, 251, 251, 248]
    assert _rows(slices) == list(range(1001))


@pytest.mark.parametrize("content", [b"not parquet", None])
def test_unreadable_or_empty_inputs_are_left_to_ray_datas_reader(tmp_path, content):
    path = tmp_path / "input.parquet"
    if content is None:
        pq.write_table(pa.table({"x": pa.array([], pa.float64())}), path)
    else:
        path.write_bytes(content)
    assert plan_slices([str(path)], rows_per_read=100, reads_wanted=2) is None


def test_a_worker_loads_a_package_once_and_again_only_when_it_changes(tmp_path, monkeypatch):
    """Scoring tasks share their worker's package: loaded on the first block, kept for the next
    ones and the next run, loaded anew when the folder's description changes; one held at a time."""
    import raymlp.package as package_module
    from raymlp.serve import batch

    loads = []
    monkeypatch.setattr(package_module, "load_package", lambda path: loads.append(path) or object())
    monkeypatch.setattr(batch, "_LOADED", {})
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / package_module.DESCRIPTION_FILE).write_text('{"format": 1}')
    held = batch._package_in_this_process(str(first))
    assert batch._package_in_this_process(str(first)) is held and loads == [str(first)]
    (first / package_module.DESCRIPTION_FILE).write_text('{"format": 1, "version": 2}')
    assert batch._package_in_this_process(str(first)) is not held and loads == [str(first)] * 2
    batch._package_in_this_process(str(second))
    assert len(batch._LOADED) == 1 and loads[-1] == str(second)

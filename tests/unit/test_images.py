"""Image folders (one subfolder per class) -> dataset version -> verify; and into every database."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from raymlp import load_job, run_job
from raymlp.catalog import Catalog
from raymlp.context import Reporter
from raymlp.data.integrity import content_digest, file_sha256
from raymlp.data.verify import verify_against_source
from raymlp.errors import UsageError, WorkFailed
from raymlp.storage import resolve_storage

from .test_data import DATABASES, database_url  # noqa: F401  (fixture)


def encoded(kind: str, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> bytes:
    from PIL import Image

    image = Image.effect_noise(size, 40 + seed).convert(mode)
    sink = io.BytesIO()
    image.save(sink, kind, **({"quality": 90} if kind == "JPEG" else {}))
    return sink.getvalue()


def image_folder(root: Path, broken: bool = True) -> dict[str, bytes]:
    """Three classes of PNG and JPEG images (RGB, grey, RGBA), plus files that are not images."""
    good = {
        "cat/tabby.png": encoded("PNG", (12, 9)),
        "cat/grey.jpg": encoded("JPEG", (16, 8), "L", 1),
        "dog/pug.jpeg": encoded("JPEG", (20, 30), seed=2),
        "dog/alpha.png": encoded("PNG", (7, 5), "RGBA", 3),
        "bird/one pixel.png": encoded("PNG", (1, 1)),
    }
    for name, data in good.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "cat" / "notes.txt").write_text("not an image, not read")
    (root / "cat" / ".hidden.png").write_bytes(b"editor swap file")
    if broken:
        (root / "dog" / "garbage.png").write_bytes(b"this is not an image")
        jpeg = encoded("JPEG", (64, 64), seed=4)
        (root / "bird" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
        png = encoded("PNG", (32, 32), seed=5)
        (root / "cat" / "cut.png").write_bytes(png[:-30])
    return good


BROKEN = {
    "dog/garbage.png": "not a readable image: not in any format Pillow reads",
    "bird/cut.jpg": "not a readable image: OSError: image file is truncated",
    "cat/cut.png": "not a readable image: ",
}


def job_file(folder: Path, source: Path, collect: str = "") -> Path:
    job = folder / "job.yaml"
    job.write_text(
        "version: 1\nname: pets\n"
        f"data:\n  source: {{format: images, path: '{source}'}}\n{collect}"
        "  dataset: {name: pets}\n  label: label\n"
    )
    return job


def raymlp(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raymlp", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAYMLP_HOME": str(home)},
    )


def test_image_folder_converts_to_a_version_with_quarantine_and_verifies(tmp_path):
    import pandas as pd

    from raymlp.data.versions import read_version_table

    root = tmp_path / "pets"
    good = image_folder(root)
    hashes = {path: file_sha256(path) for path in root.rglob("*") if path.is_file()}
    home = tmp_path / "home"
    job = job_file(tmp_path, root)

    converted = raymlp("data", "convert", str(job), home=home)
    assert converted.returncode == 0, converted.stderr
    os.environ["RAYMLP_HOME"], previous = str(home), os.environ.get("RAYMLP_HOME")
    try:
        with Catalog(resolve_storage().catalog_url) as catalog:
            record = catalog.get_dataset_version("pets")
    finally:
        os.environ.pop("RAYMLP_HOME") if previous is None else os.environ.__setitem__("RAYMLP_HOME", previous)
    table = read_version_table(record.path, record.manifest)
    assert table.schema.names == ["image", "label", "path", "width", "height", "format"]
    assert table.schema.field("image").type == pa.binary()
    rows = {row["path"]: row for row in table.to_pylist()}
    assert set(rows) == set(good)
    for name, data in good.items():
        assert rows[name]["image"] == data, "the version holds the file's bytes exactly"
        assert rows[name]["label"] == name.split("/")[0]
    assert (rows["dog/pug.jpeg"]["width"], rows["dog/pug.jpeg"]["height"], rows["dog/pug.jpeg"]["format"]) == (
        20,
        30,
        "JPEG",
    )
    assert (rows["dog/alpha.png"]["width"], rows["dog/alpha.png"]["height"], rows["dog/alpha.png"]["format"]) == (
        7,
        5,
        "PNG",
    )

    aside = pd.read_parquet(Path(record.path) / "quarantine.parquet")
    reasons = dict(zip(aside["_raymlp_source"], aside["_raymlp_reason"]))
    assert set(reasons) == {str(root / name) for name in BROKEN}
    for name, reason in BROKEN.items():
        assert reasons[str(root / name)].startswith(reason)
    assert set(aside["_raymlp_row"]) == {1}
    validation = record.manifest["validation"]
    assert (validation["rows_in"], validation["rows_kept"], validation["rows_quarantined"]) == (8, 5, 3)
    assert {item["path"] for item in record.manifest["source"]["files"]} == {
        str((root / name).resolve()) for name in [*good, *BROKEN]
    }

    verified = raymlp("data", "verify", "pets", home=home)
    assert verified.returncode == 0, verified.stderr
    assert "its source yields the same 5 rows (+3 quarantined) and the same content digest" in verified.stdout
    assert {path: file_sha256(path) for path in hashes} == hashes, "sources are only read"

    (root / "cat" / "tabby.png").write_bytes(encoded("PNG", (12, 9), seed=9))
    changed = raymlp("data", "verify", "pets", home=home)
    assert changed.returncode == 1
    assert f"source file {(root / 'cat' / 'tabby.png').resolve()} changed since the version was made" in changed.stderr


def test_images_outside_class_folders_are_refused(tmp_path, raymlp_home):
    from raymlp.config.schema import SourceConfig
    from raymlp.data.sources import read_source

    root = tmp_path / "pets"
    image_folder(root, broken=False)
    (root / "stray.png").write_bytes(encoded("PNG", (2, 2)))
    (root / "dog" / "puppies").mkdir()
    (root / "dog" / "puppies" / "small.png").write_bytes(encoded("PNG", (2, 2)))
    with pytest.raises(
        UsageError,
        match=r"data.source.path: 2 images in '.*' are not directly inside a class folder "
        r"\(first: .*puppies/small.png, .*stray.png\); the images format reads .*/CLASS/IMAGE",
    ):
        read_source(SourceConfig(format="images", path=str(root)))
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match="holds no images"):
        read_source(SourceConfig(format="images", path=str(empty)))
    globbed = read_source(SourceConfig(format="images", path=str(root / "*" / "*.png")))
    assert sorted(globbed.table.column("path").to_pylist()) == ["bird/one pixel.png", "cat/tabby.png", "dog/alpha.png"]


def test_images_collect_into_each_database_and_round_trip_exactly(tmp_path, raymlp_home, database_url):  # noqa: F811
    from raymlp.config.schema import SourceConfig
    from raymlp.data.sources import read_source
    from raymlp.data.sql import engine_for

    root = tmp_path / "pets"
    image_folder(root, broken=False)
    direct = read_source(SourceConfig(format="images", path=str(root))).table
    table_name = f"raymlp_img_{uuid.uuid4().hex[:10]}"
    collect = f"  collect: {{url: '{database_url}', table: {table_name}, mode: replace}}\n"
    try:
        summary = run_job(load_job(job_file(tmp_path, root, collect)), reporter=Reporter(quiet=True))
        assert summary.dataset_rows == 5
        with Catalog(resolve_storage().catalog_url) as catalog:
            record = catalog.get_dataset_version("pets")
            collection = catalog.list_collections(table_name)[0]
        assert record.content_digest == content_digest(direct), "file -> table -> version keeps every byte"
        assert verify_against_source(record.manifest, database_url) == []
        kind = database_url.split(":")[0]
        assert collection.column_types["image"] == {"sqlite": "BLOB", "postgresql": "BYTEA", "mysql": "LONGBLOB"}[kind]

        (root / "dog" / "garbage.png").write_bytes(b"not an image")
        with pytest.raises(
            WorkFailed,
            match=r"(?s)1 malformed records in the source; a table cannot hold them aside .*"
            r"garbage.png:1: not a readable image",
        ):
            run_job(load_job(job_file(tmp_path, root, collect)), reporter=Reporter(quiet=True))
    finally:
        engine = engine_for(database_url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table_name}")
        engine.dispose()

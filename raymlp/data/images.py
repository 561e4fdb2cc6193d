"""Image folders (one subfolder per class) read as rows: the file's bytes, its class and its size.

Each image is one row: `image` (the file's bytes exactly as stored, binary), `label` (the name of
the folder it is in), `path` (`label/file name`, so the rows do not depend on where the folder
lives), `width`, `height` and `format` (what Pillow reads from the header). A file Pillow
cannot read becomes a quarantine row with the file and the reason, never a silent gap.
"""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pyarrow as pa

from raymlp.errors import UsageError

from .csvfile import REASON_COLUMN, ROW_COLUMN, SOURCE_COLUMN

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image", pa.binary()),
        pa.field("label", pa.string()),
        pa.field("path", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("format", pa.string()),
    ]
)


def expand_image_paths(patterns: list[str]) -> list[str]:
    """Image files named by folders (FOLDER/CLASS/IMAGE) or globs, sorted; each lies in its class folder.

    In a folder, files whose names end in an image suffix are read and other files are left
    alone; an image directly in the folder or deeper than one class folder is an error, since
    its class would be a guess.
    """
    from raymlp.storage import files

    found: list[str] = []
    for item in patterns:
        expanded = item if files.is_remote(item) else os.path.expanduser(item)
        if files.is_folder(expanded):
            root = files.normalized(expanded, key="data.source.path").rstrip("/")
            relative = [name[len(root) + 1 :].split("/") for name in files.list_files(root)]
            images = [
                parts
                for parts in relative
                if parts[-1].lower().endswith(IMAGE_SUFFIXES) and not any(part.startswith(".") for part in parts)
            ]
            misplaced = ["/".join([root, *parts]) for parts in images if len(parts) != 2]
            if misplaced:
                shown = ", ".join(misplaced[:5])
                raise UsageError(
                    f"data.source.path: {len(misplaced)} images in '{item}' are not directly inside a class folder "
                    f"(first: {shown}); the images format reads {item}/CLASS/IMAGE, the class being the folder's name"
                )
            matches = ["/".join([root, *parts]) for parts in images]
        elif files.is_remote(expanded):
            matches = files.glob(expanded)
        else:
            matches = [match for match in sorted(glob.glob(expanded, recursive=True)) if os.path.isfile(match)]
        if not matches:
            raise UsageError(
                f"data.source.path: '{item}' holds no images ({', '.join(IMAGE_SUFFIXES)}) in class folders "
                f"(working directory: {os.getcwd()})"
            )
        found += [files.normalized(match) for match in matches]
    return list(dict.fromkeys(found))


def image_facts(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of an encoded image; raises when Pillow finds it unreadable or corrupt.

    Size and format come from the header. PNG is checked by `verify` (every chunk's CRC, through
    IEND) without inflating pixels; JPEG is decoded at 1/8 scale (its draft mode), which still reads
    every entropy-coded segment, so truncation shows; other formats are decoded in full.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        kind, (width, height) = image.format, image.size
        image.verify()
    if kind != "PNG":
        with Image.open(io.BytesIO(data)) as image:
            if kind == "JPEG":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    return str(kind), int(width), int(height)


def read_image_files(names: list[str]) -> tuple[pa.Table, np.ndarray, np.ndarray, pa.Table | None]:
    """Rows of readable images, the record number (1) and file of each, and quarantine rows for the rest."""
    from PIL import UnidentifiedImageError

    from raymlp.storage import files

    columns: dict[str, list] = {field.name: [] for field in IMAGE_SCHEMA}
    origins: list[str] = []
    bad_files: list[str] = []
    reasons: list[str] = []
    for path in names:
        try:
            data = files.read_bytes(path)
        except OSError as error:
            bad_files.append(str(path))
            reasons.append(f"cannot read the file: {error.strerror or error}")
            continue
        try:
            kind, width, height = image_facts(data)
        except UnidentifiedImageError:
            bad_files.append(str(path))
            reasons.append("not a readable image: not in any format Pillow reads")
            continue
        except Exception as error:
            bad_files.append(str(path))
            reasons.append(f"not a readable image: {error.__class__.__name__}: {error}")
            continue
        label = files.name_of(files.parent(path))
        for name, value in (
            ("image", data),
            ("label", label),
            ("path", f"{label}/{files.name_of(path)}"),
            ("width", width),
            ("height", height),
            ("format", kind),
        ):
            columns[name].append(value)
        origins.append(str(path))
    table = pa.table(
        {name: pa.array(values, IMAGE_SCHEMA.field(name).type) for name, values in columns.items()}, schema=IMAGE_SCHEMA
    )
    malformed = None
    if bad_files:
        malformed = pa.table(
            {
                SOURCE_COLUMN: pa.array(bad_files, pa.string()),
                ROW_COLUMN: pa.array(np.ones(len(bad_files), dtype=np.int64)),
                REASON_COLUMN: pa.array(reasons, pa.string()),
            }
        )
    return table, np.ones(table.num_rows, dtype=np.int64), np.asarray(origins, dtype=object), malformed

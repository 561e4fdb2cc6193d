"""Where a job keeps its state: artifact root, catalog URL, MLflow tracking URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raymlp import settings
from raymlp.config.schema import StorageConfig


@dataclass(frozen=True)
class Storage:
    """Resolved storage locations (local paths are absolute, so Ray workers agree on them)."""

    root: str
    catalog_url: str
    tracking_uri: str

    @property
    def local_root(self) -> Path | None:
        """The root as a local folder, or None when it is a remote URI."""
        return None if "://" in self.root else Path(self.root)

    def folder(self, *parts: str) -> Path:
        """A folder under a local root, created if needed."""
        if self.local_root is None:
            raise ValueError(f"storage root {self.root} is not local")
        path = self.local_root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _sqlite_in(folder: Path, name: str) -> str:
    return f"sqlite:///{(folder / name).resolve()}"


def _absolute_sqlite(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def resolve_storage(config: StorageConfig | None = None) -> Storage:
    """Fill defaults from RAYMLP_HOME and make local paths absolute."""
    config = config or StorageConfig()
    home = settings.home().resolve()
    root = config.root or str(home)
    if "://" not in root:
        root = str(Path(root).expanduser().resolve())
        Path(root).mkdir(parents=True, exist_ok=True)
    state_folder = Path(root) if "://" not in root else home
    state_folder.mkdir(parents=True, exist_ok=True)
    catalog = _absolute_sqlite(config.catalog) if config.catalog else _sqlite_in(state_folder, "catalog.db")
    tracking = _absolute_sqlite(config.tracking) if config.tracking else _sqlite_in(state_folder, "mlflow.db")
    return Storage(root=root, catalog_url=catalog, tracking_uri=tracking)


def write_json_atomically(path: Path, value: object) -> None:
    """`path` holds the old JSON or the new, never part of one."""
    import json
    import os

    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(temporary, path)

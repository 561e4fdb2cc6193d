"""Every file raymlp keeps or reads, on this machine's disk or in a bucket (s3://, gs://).

A name is a local path (made absolute, so workers elsewhere agree on it) or a URI. Local files keep
what the operating system gives (a rename is atomic, so a whole folder can appear in one step);
buckets are reached through `pyarrow.fs` (the filesystems Ray Data and Ray Train use themselves),
where one object is written by one PUT and appears whole or not at all, and a folder cannot be
renamed. Credentials come from the provider's standard chain and are never asked for here: the
environment, a profile, an instance role or workload identity. An S3-compatible store (MinIO, Ceph)
is named by `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`), as for the AWS SDKs, boto3 and MLflow.

Errors: a malformed URI is a `UsageError` (exit 2); a bucket that is missing, refuses the operation
or does not accept the credentials is a `WorkFailed` (exit 1) naming the bucket, the operation and
where credentials were looked for, in one line.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from raymlp.errors import WorkFailed
from raymlp.uris import ObjectURI, is_remote, parse_uri

__all__ = ["ObjectURI", "is_remote", "parse_uri"]
_CHUNK = 4 << 20


@dataclass(frozen=True)
class FileState:
    """What tells that a file was changed: its size and modification time."""

    size: int
    mtime_ns: int


def local_path(name: str | os.PathLike[str]) -> Path:
    """A local name (path or file://) as an absolute path."""
    text = str(name)
    if text.lower().startswith("file://"):
        text = text[len("file://") :]
    return Path(os.path.abspath(os.path.expanduser(text)))


def normalized(name: str | os.PathLike[str], *, key: str = "path") -> str:
    """`name` as raymlp records it: an absolute local path, or the URI in its checked form."""
    return str(parse_uri(name, key=key)) if is_remote(name) else str(local_path(name))


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """`base`/`parts`, with '/' between the parts of a URI."""
    if not is_remote(base):
        return str(local_path(base).joinpath(*parts))
    uri = parse_uri(base)
    key = "/".join(p.strip("/") for p in (uri.key, *parts) if p.strip("/"))
    return str(ObjectURI(uri.scheme, uri.bucket, key))


def name_of(name: str | os.PathLike[str]) -> str:
    """The last part of a path or URI."""
    return str(name).rstrip("/").rsplit("/", 1)[-1]


def parent(name: str | os.PathLike[str]) -> str:
    if not is_remote(name):
        return str(local_path(name).parent)
    uri = parse_uri(name)
    return str(ObjectURI(uri.scheme, uri.bucket, uri.key.rpartition("/")[0]))


# --- filesystems ----------------------------------------------------------------------------

_filesystems: dict[tuple[str, ...], Any] = {}
_filesystems_lock = threading.Lock()


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def filesystem_for(uri: ObjectURI) -> Any:
    """The pyarrow filesystem that reaches `uri`'s bucket (one per bucket and settings, reused)."""
    import pyarrow.fs as pafs

    if uri.provider == "gcs":
        cache_key: tuple[str, ...] = ("gcs", os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", ""))
    else:
        cache_key = ("s3", uri.bucket, _endpoint() or "", _region() or "", os.environ.get("AWS_PROFILE", ""))
        cache_key += (os.environ.get("AWS_ACCESS_KEY_ID", ""),)
    with _filesystems_lock:
        found = _filesystems.get(cache_key)
        if found is not None:
            return found
        if uri.provider == "gcs":
            made = pafs.GcsFileSystem()
        else:
            options: dict[str, Any] = {}
            endpoint, region = _endpoint(), _region()
            if endpoint:
                scheme, _, host = endpoint.partition("://")
                options["endpoint_override"] = host if host else endpoint
                options["scheme"] = scheme if host else "https"
            if region:
                options["region"] = region
            elif not endpoint:
                with _translated(uri, "find the region of"):
                    options["region"] = pafs.resolve_s3_region(uri.bucket)
            made = pafs.S3FileSystem(**options)
        _filesystems[cache_key] = made
        return made


def forget_filesystems() -> None:
    """Drop the filesystems made so far (their settings may have changed)."""
    with _filesystems_lock:
        _filesystems.clear()


def arrow_filesystem(name: str | os.PathLike[str]) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for `name`: what Ray Data, Ray Train and pyarrow take."""
    import pyarrow.fs as pafs

    if not is_remote(name):
        return pafs.LocalFileSystem(), str(local_path(name))
    uri = parse_uri(name)
    return filesystem_for(uri), uri.path


# --- errors ---------------------------------------------------------------------------------


def credential_sources(provider: str) -> str:
    """Where the provider's standard chain looks for credentials, and which of them are set here."""
    if provider == "gcs":
        adc = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        return (
            f"GOOGLE_APPLICATION_CREDENTIALS ({'set' if adc else 'not set'}), gcloud's application default "
            "credentials (~/.config/gcloud), the metadata server (workload identity)"
        )
    profile = os.environ.get("AWS_PROFILE", "default")
    files = [p for p in ("~/.aws/credentials", "~/.aws/config") if Path(p).expanduser().exists()]
    return (
        f"environment AWS_ACCESS_KEY_ID ({'set' if os.environ.get('AWS_ACCESS_KEY_ID') else 'not set'}), "
        f"profile '{profile}' ({', '.join(files) if files else 'no ~/.aws files'}), web identity "
        f"(AWS_WEB_IDENTITY_TOKEN_FILE {'set' if os.environ.get('AWS_WEB_IDENTITY_TOKEN_FILE') else 'not set'}), "
        "instance role" + (f"; endpoint {_endpoint()}" if _endpoint() else "")
    )


_CREDENTIALS = (
    *("INVALID_ACCESS_KEY", "INVALIDACCESSKEYID", "SIGNATURE_DOES_NOT_MATCH", "SIGNATUREDOESNOTMATCH"),
    *("EXPIRED", "UNRECOGNIZED_CLIENT", "NO CREDENTIALS", "UNABLE TO LOCATE CREDENTIALS", "401"),
)
_DENIED = ("ACCESS_DENIED", "ACCESSDENIED", "403", "FORBIDDEN", "PERMISSION")
_NO_BUCKET = ("NO_SUCH_BUCKET", "NOSUCHBUCKET", "BUCKET DOES NOT EXIST", "BUCKET '", "NOT FOUND: BUCKET")
_UNREACHABLE = ("NETWORK_CONNECTION", "COULD NOT CONNECT", "CONNECTION REFUSED", "COULDN'T CONNECT", "TIMED OUT")


def failure(uri: ObjectURI, operation: str, error: BaseException) -> WorkFailed | None:
    """`error` (raised by a filesystem for `operation` on `uri`) as one line naming the bucket, the
    operation and where credentials were looked for; None when it is not a failure of the store
    (a missing object, say, which the caller handles)."""
    text = " ".join(str(error).split())
    upper = text.upper().replace(" ", "_") + " " + text.upper()
    bucket = f"{uri.scheme}://{uri.bucket}"
    where = f"'{uri.key}'" if uri.key else "the bucket"
    if any(mark in upper for mark in _CREDENTIALS):
        why = "the credentials were refused"
    elif any(mark in upper for mark in _DENIED):
        why = "permission denied"
    elif any(mark in upper for mark in _NO_BUCKET) and "NO_SUCH_KEY" not in upper:
        return WorkFailed(
            f"{bucket}: the bucket does not exist (or these credentials cannot see it) ({operation} {where})"
        )
    elif any(mark in upper for mark in _UNREACHABLE):
        endpoint = _endpoint() if uri.provider == "s3" else None
        return WorkFailed(
            f"{bucket}: cannot reach the store{f' at {endpoint}' if endpoint else ''} ({operation} {where}): {text[:200]}"
        )
    else:
        return None
    return WorkFailed(
        f"{bucket}: {why} ({operation} {where}); credentials looked for in: {credential_sources(uri.provider)}"
    )


@contextmanager
def _translated(uri: ObjectURI, operation: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        translated = failure(uri, operation, error)
        if translated is None:
            raise
        raise translated from None


@contextmanager
def translated_errors(name: str | os.PathLike[str], operation: str) -> Iterator[None]:
    """Store failures inside the block (a refused credential, a missing bucket) as one-line WorkFailed."""
    if not is_remote(name):
        yield
        return
    with _translated(parse_uri(name), operation):
        yield


def _remote(name: str | os.PathLike[str]) -> tuple[Any, str, ObjectURI]:
    uri = parse_uri(name)
    return filesystem_for(uri), uri.path, uri


# --- reading --------------------------------------------------------------------------------


def open_input(name: str | os.PathLike[str]) -> IO[bytes]:
    """A file open for reading at any offset (`seek`, `read`); never opened for writing."""
    if not is_remote(name):
        return open(local_path(name), "rb")
    fs, path, uri = _remote(name)
    with _translated(uri, "read"):
        return fs.open_input_file(path)


def open_stream(name: str | os.PathLike[str]) -> IO[bytes]:
    """A file open for reading from start to end (one request to a store)."""
    if not is_remote(name):
        return open(local_path(name), "rb")
    fs, path, uri = _remote(name)
    with _translated(uri, "read"):
        return fs.open_input_stream(path)


def read_range(name: str | os.PathLike[str], start: int, end: int) -> bytes:
    """Bytes [start, end) of a file (one ranged GET on a store)."""
    if not is_remote(name):
        with open(local_path(name), "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)
    fs, path, uri = _remote(name)
    with _translated(uri, "read"), fs.open_input_file(path) as handle:
        return handle.read_at(end - start, start)


def read_bytes(name: str | os.PathLike[str]) -> bytes:
    with open_stream(name) as handle, translated_errors(name, "read"):
        return handle.read()


def read_text(name: str | os.PathLike[str]) -> str:
    return read_bytes(name).decode("utf-8")


def read_json(name: str | os.PathLike[str]) -> Any:
    return json.loads(read_bytes(name))


def state(name: str | os.PathLike[str]) -> FileState | None:
    """Size and modification time of a file; None when there is none."""
    if not is_remote(name):
        try:
            info = local_path(name).stat()
        except FileNotFoundError:
            return None
        return FileState(info.st_size, info.st_mtime_ns)
    import pyarrow.fs as pafs

    fs, path, uri = _remote(name)
    with _translated(uri, "look up"):
        info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    return FileState(info.size, info.mtime_ns or 0)


def exists(name: str | os.PathLike[str]) -> bool:
    """Whether a file or folder (a prefix holding objects) is there."""
    if not is_remote(name):
        return local_path(name).exists()
    import pyarrow.fs as pafs

    fs, path, uri = _remote(name)
    with _translated(uri, "look up"):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_folder(name: str | os.PathLike[str]) -> bool:
    if not is_remote(name):
        return local_path(name).is_dir()
    import pyarrow.fs as pafs

    fs, path, uri = _remote(name)
    with _translated(uri, "look up"):
        return fs.get_file_info(path).type == pafs.FileType.Directory


def list_files(folder: str | os.PathLike[str]) -> list[str]:
    """Every file under `folder` (recursively), sorted, as names like `folder`'s; [] when there is none."""
    if not is_remote(folder):
        root = local_path(folder)
        if not root.is_dir():
            return []
        return sorted(str(path) for path in root.rglob("*") if path.is_file())
    import pyarrow.fs as pafs

    fs, path, uri = _remote(folder)
    with _translated(uri, "list"):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(f"{uri.scheme}://{info.path}" for info in infos if info.type == pafs.FileType.File)


def children(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the files and folders directly in `folder`; [] when there is none."""
    if not is_remote(folder):
        root = local_path(folder)
        return sorted(entry.name for entry in root.iterdir()) if root.is_dir() else []
    import pyarrow.fs as pafs

    fs, path, uri = _remote(folder)
    with _translated(uri, "list"):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def glob(pattern: str) -> list[str]:
    """Files in a bucket matching a glob (`*`, `?`, `[...]`; `**` crosses folders), sorted."""
    uri = parse_uri(pattern, key="data.source.path")
    parts = uri.key.split("/")
    fixed = []
    for part in parts:
        if any(mark in part for mark in "*?["):
            break
        fixed.append(part)
    if len(fixed) == len(parts):
        return [str(uri)] if state(str(uri)) is not None else []
    prefix = str(ObjectURI(uri.scheme, uri.bucket, "/".join(fixed)))
    wanted = _glob_regex(uri.key)
    return [name for name in list_files(prefix) if wanted.match(parse_uri(name).key)]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression: `*` and `?` stop at '/', `**/` matches any number of folders."""
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:[^/]+/)*")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            end = pattern.find("]", index + 1) if pattern[index] == "[" else -1
            if end > 0:
                out.append(fnmatch.translate(pattern[index : end + 1])[4:-3])
                index = end + 1
            else:
                out.append(re.escape(pattern[index]))
                index += 1
    return re.compile("".join(out) + r"\Z")


# --- writing --------------------------------------------------------------------------------


def write_bytes(name: str | os.PathLike[str], data: bytes) -> None:
    """`name` holds the old bytes or the new, never part of them (a temporary file renamed into
    place; one PUT on a store)."""
    if not is_remote(name):
        path = local_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return
    fs, key, uri = _remote(name)
    with _translated(uri, "write"), fs.open_output_stream(key) as handle:
        handle.write(data)


def write_text(name: str | os.PathLike[str], text: str) -> None:
    write_bytes(name, text.encode("utf-8"))


def write_json(name: str | os.PathLike[str], value: object) -> None:
    """JSON written whole (sorted keys, indented), or not at all."""
    write_bytes(name, json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8"))


def open_output(name: str | os.PathLike[str]) -> IO[bytes]:
    """A new file open for writing (a store's object appears when it is closed, and is kept then even
    when the block that wrote it failed: write whole files with `write_bytes` where that matters)."""
    if not is_remote(name):
        path = local_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")
    fs, key, uri = _remote(name)
    with _translated(uri, "write"):
        return fs.open_output_stream(key)


def make_folder(name: str | os.PathLike[str]) -> str:
    """A local folder made (with its parents); nothing to make in a bucket. Returns the name."""
    if not is_remote(name):
        local_path(name).mkdir(parents=True, exist_ok=True)
    return normalized(name)


def delete_file(name: str | os.PathLike[str]) -> None:
    if not is_remote(name):
        local_path(name).unlink(missing_ok=True)
        return
    fs, path, uri = _remote(name)
    with _translated(uri, "delete"):
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


def delete_tree(name: str | os.PathLike[str]) -> None:
    """A folder and everything under it; nothing when it is not there."""
    if not is_remote(name):
        shutil.rmtree(local_path(name), ignore_errors=True)
        return
    fs, path, uri = _remote(name)
    with _translated(uri, "delete"):
        fs.delete_dir_contents(path, missing_dir_ok=True)
        try:
            fs.delete_dir(path)
        except (FileNotFoundError, OSError):
            pass


def upload_folder(local: str | os.PathLike[str], destination: str) -> None:
    """Copy a local folder's files to `destination` (a bucket's prefix or a local folder)."""
    source = local_path(local)
    for path in sorted(source.rglob("*")):
        if path.is_file():  # whole, in one call: a store's stream closed by an error would keep what it had
            write_bytes(join(destination, path.relative_to(source).as_posix()), path.read_bytes())


def copy_tree(source: str, destination: str, *, replace: bool = False) -> list[str]:
    """Copy every file under `source` to the same place under `destination` (inside a store: a
    server-side copy). `replace`: what was at `destination` is deleted first. Returns the copies."""
    if replace:
        delete_tree(destination)
    prefix = normalized(source).rstrip("/") + "/"
    copies = []
    for name in list_files(source):
        copy = join(destination, name[len(prefix) :])
        if is_remote(name) and is_remote(copy) and parse_uri(name).scheme == parse_uri(copy).scheme:
            fs, path, uri = _remote(name)
            with _translated(uri, "copy"):
                fs.copy_file(path, parse_uri(copy).path)
        else:
            write_bytes(copy, read_bytes(name))
        copies.append(copy)
    return copies


def download_folder(source: str, local: str | os.PathLike[str]) -> Path:
    """Copy every file under `source` into the local folder `local` (made); returns it."""
    target = local_path(local)
    target.mkdir(parents=True, exist_ok=True)
    prefix = normalized(source).rstrip("/") + "/"
    for name in list_files(source):
        relative = name[len(prefix) :]
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_stream(name) as handle, open(path, "wb") as out:
            while chunk := handle.read(_CHUNK):
                out.write(chunk)
    return target


def sha256_of(name: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read from start to end (never opened for writing)."""
    import hashlib

    digest = hashlib.sha256()
    with open_stream(name) as handle, translated_errors(name, "read"):
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

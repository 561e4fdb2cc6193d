"""URIs of object stores (s3://, gs://): what is one, and the checked parts of one.

On the bottom floor so that the job schema can refuse a malformed `storage.root` or source URI
with its FILE:LINE, and the storage layer can parse the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from raymlp.errors import UsageError

#: URI schemes of object stores, and the provider each belongs to.
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ObjectURI:
    """A URI of an object store, checked: `s3://bucket/key` or `gs://bucket/key`."""

    scheme: str
    bucket: str
    key: str

    @property
    def provider(self) -> str:
        return SCHEMES[self.scheme]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    @property
    def path(self) -> str:
        """The name pyarrow's filesystem takes: `bucket/key`."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket


def is_remote(name: str | os.PathLike[str]) -> bool:
    """Whether `name` is a URI of an object store (s3://, gs://); file:// and paths are local."""
    text = str(name)
    return "://" in text and text.split("://", 1)[0].lower() != "file"


def uri_problem(text: str) -> str | None:
    """What is wrong with `text` as an object-store URI (None: a well-formed one, or no URI at all)."""
    if not is_remote(text):
        return None
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        return f"'{text}' is not a local path or a URI raymlp can read ({known})"
    bucket = rest.partition("/")[0]
    if not _BUCKET.match(bucket) or ".." in bucket:
        return (
            f"'{text}' does not name a bucket ({scheme}://BUCKET/KEY, where BUCKET is 3-63 lower-case "
            "letters, digits, '.', '-' or '_')"
        )
    if any(part in (".", "..") for part in rest.partition("/")[2].split("/")):
        return f"'{text}' has '.' or '..' in its key; object stores have no relative names"
    return None


def parse_uri(name: str | os.PathLike[str], *, key: str = "path") -> ObjectURI:
    """`name` as an object-store URI; a `UsageError` naming `key` when it is not a well-formed one."""
    text = str(name)
    problem = uri_problem(text) if is_remote(text) else f"'{text}' is not a URI of an object store"
    if problem is not None:
        raise UsageError(f"{key}: {problem}")
    scheme, _, rest = text.partition("://")
    bucket, _, object_key = rest.partition("/")
    object_key = re.sub(r"/{2,}", "/", object_key).strip("/")
    return ObjectURI(scheme.lower(), bucket, object_key)


def checked_location(value: str) -> str:
    """A pydantic validator: a local path, or a well-formed object-store URI."""
    problem = uri_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value

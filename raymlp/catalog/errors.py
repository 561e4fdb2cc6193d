"""The catalog's errors."""

from __future__ import annotations

from raymlp.errors import RaymlpError, UsageError


class CatalogError(RaymlpError):
    """The catalog could not do what was asked; the message says what was found."""


class NotInCatalog(CatalogError, UsageError):
    """A name or version the caller gave is not in the catalog: bad usage (exit 2), like an unknown model."""


class DatasetVersionExists(CatalogError):
    """A dataset version with that name and number is already registered."""

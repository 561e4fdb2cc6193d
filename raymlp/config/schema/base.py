"""What every job-file section shares: the Section base class, the format version, names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from raymlp.uris import checked_location

CURRENT_VERSION = 1

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


def _check_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError(
            f"'{value}' is not a usable name: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no '/' or spaces)"
        )
    return value


#: A local path, or an object-store URI (s3://BUCKET/KEY, gs://BUCKET/KEY) checked for its form.
Location = Annotated[str, AfterValidator(checked_location)]

#: Names that become folders, experiment names and registry names: never a path.
Name = Annotated[str, AfterValidator(_check_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]


class Section(BaseModel):
    """A job-file section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

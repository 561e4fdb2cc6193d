"""The job file: schema, loader, cross-field checks."""

from .loader import LoadedJob, job_json_schema, load_job
from .schema import CURRENT_VERSION, JobConfig
from .yamlfile import ConfigError, ConfigIssue

__all__ = ["CURRENT_VERSION", "ConfigError", "ConfigIssue", "JobConfig", "LoadedJob", "job_json_schema", "load_job"]

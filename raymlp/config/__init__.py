"""The job file: schema, loader, cross-field checks."""

from .loader import ConfigError, ConfigIssue, LoadedJob, job_json_schema, load_job
from .schema import CURRENT_VERSION, JobConfig

__all__ = ["CURRENT_VERSION", "ConfigError", "ConfigIssue", "JobConfig", "LoadedJob", "job_json_schema", "load_job"]

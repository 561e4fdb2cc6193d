"""MLflow glue: experiments, runs, the model registry and aliases."""

from .mlflow_tracking import ModelRef, Tracker, check_requirements, parse_model_ref

__all__ = ["ModelRef", "Tracker", "check_requirements", "parse_model_ref"]

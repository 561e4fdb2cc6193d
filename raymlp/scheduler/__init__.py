"""Pipelines that run by themselves: triggers in the job file, a scheduler on the cluster (a detached Ray actor
whose state is in the catalog), every firing a Ray job, and exports for KubeRay and Airflow."""

"""Sweeps: search spaces over dotted job-config paths, Ray Tune searchers and schedulers, the sweep stage."""

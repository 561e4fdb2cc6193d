"""Monitoring: what endpoints and batch predictions saw (the capture), compared with what the model
learned from: profiles, anomalies, drift, measured and estimated performance, skew replay, reports."""

"""Data stage: sources, collect, convert, validate, verify, preprocessing."""

"""Services: what the command line and the pipeline both do with a model, a sweep or a job's inputs.

Serve a model, predict a batch, resolve a model reference, read a sweep's results, check what a job
reads. Below cli, pipeline and launch; above tune, serve, train, tracking, package, data and catalog.
It never imports cli or pipeline.
"""

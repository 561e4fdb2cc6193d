"""Online endpoints on Ray Serve and batch prediction on Ray Data, from a model package."""

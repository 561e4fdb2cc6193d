"""Launch: job submission to clusters, named runtime environments, cluster files."""

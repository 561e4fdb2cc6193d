"""Train stage: backends behind one interface, built-in models, the model package."""

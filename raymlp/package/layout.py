"""The names inside a model package folder (format `raymlp.package/1`); see `raymlp.package`."""

from __future__ import annotations

PACKAGE_FORMAT = "raymlp.package/1"
DESCRIPTION_FILE = "raymlp-package.json"
PREPROCESSOR_FILE = "preprocessor.pkl"
#: Folder of the model's own files: weights in the framework's format, `builder.py` for a custom model.
MODEL_DIR = "model"
#: A custom model's builder source, in `model/` (the description keeps its sha256).
BUILDER_FILE = "builder.py"
#: Folder that holds the module sources a chain runs, one file per version (for people; loading
#: checks the pickled copies against the recorded sha256).
PACKAGE_MODULES_DIR = "modules"
#: The predictions' column (classifiers add `probability_<class>` columns).
PREDICTION_COLUMN = "prediction"

"""The model package: one folder with everything needed to predict, its writer and its one loader.

Layout (format `raymlp.package/1`)::

    raymlp-package.json   format, framework, task, label, classes, features, model, metrics, lineage,
                          preprocess (the steps as run), modules (name, version, sha256, file of each)
    preprocessor.pkl      the fitted Ray Data preprocessor chain (None when the job has no preprocess steps);
                          function and dask steps inside it carry their module's exact source
    modules/NAME@V.py     the source of every module version the chain runs, byte for byte (to read;
                          loading checks the pickled copies against the recorded sha256)
    model/                weights in the framework's own format (`formats/`); builder.py for a custom model

This package sits above `raymlp.data` and below tracking, train, serve and tune: it never imports
`raymlp.train`. Training writes a package with `write_package`; batch predict, Serve, evaluation
and the MLflow pyfunc model read one with `load_package`.
"""

from __future__ import annotations

from .description import describe_package, pip_requirements
from .layout import BUILDER_FILE, DESCRIPTION_FILE, PACKAGE_FORMAT, PREDICTION_COLUMN, PREPROCESSOR_FILE
from .load import ModelPackage, load_package, numeric_features_as_float
from .sources import package_transforms
from .write import rewrite_description, write_package

__all__ = [
    "BUILDER_FILE",
    "DESCRIPTION_FILE",
    "PACKAGE_FORMAT",
    "PREDICTION_COLUMN",
    "PREPROCESSOR_FILE",
    "ModelPackage",
    "describe_package",
    "load_package",
    "numeric_features_as_float",
    "package_transforms",
    "pip_requirements",
    "rewrite_description",
    "write_package",
]

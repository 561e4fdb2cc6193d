"""Shared test helpers: real services, with skips that turn into failures under CI=true."""

from __future__ import annotations

import os

import pytest

# Nothing may rely on MLflow's default store (sqlite:///mlflow.db in the working directory):
# every raymlp call names its store. A default used by mistake fails loudly here.
os.environ["MLFLOW_TRACKING_URI"] = "sqlite:////nonexistent/raymlp-tests-must-not-use-the-default-mlflow-store.db"
os.environ.pop("MLFLOW_REGISTRY_URI", None)

POSTGRES_URL = os.environ.get("RAYMLP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("RAYMLP_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def require_service(url: str, what: str) -> None:
    """Skip on a laptop without the server; fail under CI, where the server must be there."""
    import sqlalchemy as sa

    from raymlp.catalog import with_installed_driver

    try:
        parsed = with_installed_driver(sa.engine.make_url(url))
        engine = sa.create_engine(parsed, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any failure to reach the server
        message = f"{what} at {url} is unreachable: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def raymlp_home(tmp_path, monkeypatch):
    """A fresh RAYMLP_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("RAYMLP_HOME", str(home))
    return home

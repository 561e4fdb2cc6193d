"""Preprocessing modules: `raymlp data modules add|list|show`, refs in jobs, and the function step itself."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from raymlp.errors import UsageError, WorkFailed

from .test_cli import raymlp

TRANSFORMS = '''\
"""Iris features."""
import numpy as np


def areas(df):
    """Petal and sepal areas instead of lengths and widths."""
    return df.assign(petal_area=df.pl * df.pw, sepal_area=df.sl * df.sw)[["petal_area", "sepal_area"]]


def log_areas(frame):
    return frame.assign(petal_area=np.log1p(frame.petal_area))


def _private(df):
    return df
'''

JOB = """\
version: 1
name: iris
data:
  source: {format: sklearn, sklearn: {name: iris}}
  dataset: {name: iris}
  label: target
preprocess:
  - {type: standard_scaler}
  - {type: function, ref: "REF"}
"""


@pytest.fixture
def project(tmp_path):
    """A project folder with transforms.py and a RAYMLP_HOME of its own."""
    (tmp_path / "transforms.py").write_text(TRANSFORMS)
    return tmp_path


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return raymlp(*args, env={"RAYMLP_HOME": str(project / ".raymlp")}, cwd=project)


# --- add / list / show ------------------------------------------------------------------------


def test_add_stores_the_source_with_its_hash_and_lists_its_functions(project):
    added = cli(project, "data", "modules", "add", "transforms.py")
    assert added.returncode == 0, added.stderr
    digest = hashlib.sha256(TRANSFORMS.encode()).hexdigest()
    assert added.stdout.splitlines() == [
        f"transforms version 1 added, sha256 {digest}",
        "  transforms:areas(df)  line 5  Petal and sepal areas instead of lengths and widths.",
        "  transforms:log_areas(frame)  line 10",
    ]

    again = cli(project, "data", "modules", "add", "transforms.py")
    assert again.returncode == 0
    assert (
        again.stdout.splitlines()[0]
        == f"transforms: unchanged, identical to version 1 (sha256 {digest}); nothing added"
    )

    (project / "transforms.py").write_text(TRANSFORMS.replace("np.log1p", "np.log"))
    changed = json.loads(cli(project, "data", "modules", "add", "transforms.py", "--json").stdout)
    assert (changed["version"], changed["created"]) == (2, True)
    assert changed["sha256"] == hashlib.sha256(TRANSFORMS.replace("np.log1p", "np.log").encode()).hexdigest()

    listed = json.loads(cli(project, "data", "modules", "list", "--json").stdout)
    assert [(m["name"], m["latest_version"], m["versions"], m["functions"]) for m in listed] == [
        ("transforms", 2, 2, ["areas", "log_areas"])
    ]
    shown = json.loads(cli(project, "data", "modules", "show", "transforms", "--json").stdout)
    assert [(v["version"], v["sha256"]) for v in shown["versions"]] == [(1, digest), (2, changed["sha256"])]
    assert shown["versions"][0]["functions"][0] == {
        "name": "areas",
        "line": 5,
        "signature": "(df)",
        "doc": "Petal and sepal areas instead of lengths and widths.",
    }
    assert shown["versions"][0]["filename"] == str(project / "transforms.py")
    one = json.loads(cli(project, "data", "modules", "show", "transforms@1", "--json", "--source").stdout)
    assert [v["version"] for v in one["versions"]] == [1] and one["versions"][0]["source"] == TRANSFORMS
    table = cli(project, "data", "modules", "show", "transforms")
    assert table.returncode == 0 and "transforms:log_areas" in table.stdout

    renamed = cli(project, "data", "modules", "add", "transforms.py", "--name", "iris_features")
    assert renamed.stdout.startswith("iris_features version 1 added")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("def f(df):\n    return (df\n", "broken.py:2: the module does not parse: '(' was never closed"),
        (
            "import numpy\n\ndef f(df):\n    return df\n\n1 / 0\n",
            "broken.py:6: importing the module raised ZeroDivisionError: division by zero",
        ),
        (
            "from neighbour_file import helper\n\ndef f(df):\n    return df\n",
            "broken.py:1: importing the module raised ModuleNotFoundError: No module named 'neighbour_file' "
            "(a module must be self-contained",
        ),
        ("X = 1\n\ndef _hidden(df):\n    return df\n", "broken.py: defines no public functions"),
        (b"def f(df):\n    return df  # caf\xe9\n", "broken.py:2: the file is not UTF-8 text"),
    ],
)
def test_add_refuses_a_module_that_cannot_be_used_with_file_and_line(project, content, message):
    # A sibling file the module tries to import must not rescue it: Ray workers would not have it.
    (project / "neighbour_file.py").write_text("def helper():\n    pass\n")
    path = project / "broken.py"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = cli(project, "data", "modules", "add", "broken.py")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(cli(project, "data", "modules", "list", "--json").stdout) == []


def test_add_names_and_usage_errors_exit_2(project):
    (project / "my-transforms.py").write_text(TRANSFORMS)
    bad_name = cli(project, "data", "modules", "add", "my-transforms.py")
    assert bad_name.returncode == 2 and "name it with --name NAME" in bad_name.stderr
    assert cli(project, "data", "modules", "add", "my-transforms.py", "--name", "mine").returncode == 0
    missing = cli(project, "data", "modules", "add", "nowhere.py")
    assert missing.returncode == 2 and "nowhere.py: no such file" in missing.stderr
    unknown = cli(project, "data", "modules", "show", "nothing")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no module named 'nothing' (modules: mine)")


# --- refs in job files ------------------------------------------------------------------------------


def test_validate_checks_refs_against_the_catalog_with_file_and_line(project):
    job = project / "job.yaml"
    job.write_text(JOB.replace("REF", "transforms:areas"))
    before = cli(project, "validate", "job.yaml")
    assert before.returncode == 2
    assert before.stderr.splitlines() == [
        "job.yaml:9: preprocess.1.ref: 'transforms' is not a registered module (modules: none); "
        "add it with: raymlp data modules add transforms.py",
        "1 problem in the job file",
    ]
    assert not (project / ".raymlp").exists(), "validate must not create a catalog"

    assert cli(project, "data", "modules", "add", "transforms.py").returncode == 0
    assert cli(project, "validate", "job.yaml").returncode == 0

    for ref, message in [
        (
            "transforms:volume",
            "module 'transforms' version 1 defines no function 'volume' (functions: areas, log_areas)",
        ),
        (
            "transforms:_private",
            "module 'transforms' version 1 defines no function '_private' (functions: areas, log_areas)",
        ),
        ("transforms@4:areas", "module 'transforms' has no version 4 (versions: 1)"),
        (
            "other:areas",
            "'other' is not a registered module (modules: transforms); add it with: raymlp data modules add other.py",
        ),
    ]:
        job.write_text(JOB.replace("REF", ref))
        result = cli(project, "validate", "job.yaml")
        assert result.returncode == 2, ref
        assert result.stderr.splitlines()[0] == f"job.yaml:9: preprocess.1.ref: {message}"


def test_run_refuses_unknown_refs_before_starting_ray(project):
    job = project / "job.yaml"
    job.write_text(JOB.replace("REF", "transforms:nope") + "train: {framework: torch, model: {type: mlp}}\n")
    assert cli(project, "data", "modules", "add", "transforms.py").returncode == 0
    result = raymlp(
        "train", "job.yaml", cwd=project, env={"RAYMLP_HOME": str(project / ".raymlp"), "RAY_ADDRESS": "127.0.0.1:1"}
    )
    assert result.returncode == 2
    assert "job.yaml:9: preprocess.1.ref: module 'transforms' version 1 defines no function 'nope'" in result.stderr


def test_malformed_refs_are_schema_errors(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace('"REF"', '"transforms.areas"') + '  - {type: dask, ref: "t@0:f", columns: [a]}\n')
    result = raymlp("validate", str(job))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{job}:9: preprocess.1.ref: 'transforms.areas' is not MODULE:FUNCTION or MODULE@VERSION:FUNCTION "
        '(MODULE and FUNCTION are Python names, VERSION a number), e.g. "transforms:add_ratios" or "transforms@2:add_ratios"',
        f"{job}:10: preprocess.2.ref: 't@0:f' is not MODULE:FUNCTION or MODULE@VERSION:FUNCTION "
        '(MODULE and FUNCTION are Python names, VERSION a number), e.g. "transforms:add_ratios" or "transforms@2:add_ratios"',
        f"{job}:10: preprocess.2.columns: unknown key; allowed keys: type, ref",
        "3 problems in the job file",
    ]


def test_columns_after_a_function_step_are_not_judged_before_it_runs(tmp_path):
    from raymlp.config import load_job

    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("REF", "transforms:areas") + "  - {type: min_max_scaler, columns: [petal_area]}\n")
    loaded = load_job(job)  # petal_area is made by the function step
    assert [step.type for step in loaded.config.preprocess] == ["standard_scaler", "function", "min_max_scaler"]


def test_validate_of_a_job_with_module_steps_imports_no_ray_or_dask(project):
    job = project / "job.yaml"
    job.write_text(JOB.replace("REF", "transforms:areas"))
    assert cli(project, "data", "modules", "add", "transforms.py").returncode == 0
    probe = textwrap.dedent(f"""
        import json, os, sys
        os.environ["RAYMLP_HOME"] = {str(project / ".raymlp")!r}
        from raymlp.cli import main
        codes = [main(["validate", {str(job)!r}]), main(["data", "modules", "list"])]
        heavy = sorted(name for name in ("torch", "ray", "dask", "mlflow") if name in sys.modules)
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"codes": [0, 0], "heavy": []}


# --- the step: contract, pickling, integrity -------------------------------------------------------


def _record(source: str, name: str = "transforms", version: int = 1):
    from raymlp.catalog import ModuleRecord

    return ModuleRecord(
        id=1,
        name=name,
        version=version,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        source=source,
        filename="transforms.py",
        functions=[],
        created_at=None,
    )


IRIS = pd.DataFrame(
    {"sl": [5.0, 3.0, 6.0], "sw": [3.0, 5.0, 2.0], "pl": [4.0, 6.0, 1.0], "pw": [1.5, 1.0, 0.5]}, index=[7, 3, 11]
)


def test_a_function_step_runs_the_stored_source_and_keeps_row_order():
    from raymlp.data.transform import function_transform

    step = function_transform("function", "transforms:areas", _record(TRANSFORMS))
    out = step.transform_batch(IRIS)
    assert list(out.columns) == ["petal_area", "sepal_area"] and list(out.index) == [7, 3, 11]
    assert out["petal_area"].tolist() == [6.0, 6.0, 0.5]
    assert "transforms" not in sys.modules  # built from the text, never imported by name


def test_a_chain_with_function_steps_pickles_and_runs_in_a_process_without_the_catalog(tmp_path):
    from ray.data.preprocessors import Chain

    from raymlp.data.transform import function_transform

    chain = Chain(
        function_transform("function", "transforms:areas", _record(TRANSFORMS)),
        function_transform("function", "transforms:log_areas", _record(TRANSFORMS)),
    )
    (tmp_path / "chain.pkl").write_bytes(pickle.dumps(chain))
    IRIS.to_pickle(tmp_path / "rows.pkl")
    probe = textwrap.dedent(f"""
        import pickle, pandas as pd
        chain = pickle.loads(open({str(tmp_path / "chain.pkl")!r}, "rb").read())
        chain.transform_batch(pd.read_pickle({str(tmp_path / "rows.pkl")!r})).to_pickle({str(tmp_path / "out.pkl")!r})
    """)
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "RAYMLP_HOME": str(tmp_path / "no-home"),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        },
    )
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "out.pkl"), chain.transform_batch(IRIS))
    assert not (tmp_path / "no-home").exists()


def test_a_tampered_source_is_refused():
    from raymlp.data.transform import function_transform

    step = function_transform("function", "transforms:areas", _record(TRANSFORMS, name="tampered"))
    step.source = TRANSFORMS.replace("df.pl * df.pw", "df.pl + df.pw")
    with pytest.raises(WorkFailed, match=r"module tampered@1: its source has sha256 [0-9a-f]{64}, not the recorded"):
        step.transform_batch(IRIS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return df.head(1)", r"transforms@1:f returned 1 rows for a batch of 3; a step must return one row per input"),
        ("return df['sl']", r"transforms@1:f returned Series; it must return a pandas DataFrame"),
        # The user's own exception, and where in the module (the package's modules/transforms@1.py) it was raised.
        (
            "raise KeyError('color')",
            r"preprocess step transforms@1:f failed on a batch of 3 rows: KeyError: 'color' \(transforms@1\.py:2\)$",
        ),
    ],
)
def test_a_function_that_breaks_the_contract_is_a_clear_failure(body, message):
    from raymlp.data.transform import function_transform

    source = f"def f(df):\n    {body}\n"
    step = function_transform("function", "transforms:f", _record(source))
    with pytest.raises(WorkFailed, match=message):
        step.transform_batch(IRIS)


def test_rows_a_function_reorders_are_put_back_and_a_new_index_is_taken_in_order():
    from raymlp.data.transform import function_transform

    reorder = "def f(df):\n    return df.sort_values('sl').assign(k=1)\n"
    renumber = "def f(df):\n    return df.reset_index(drop=True).assign(k=2)\n"
    for name, source in (("reorder", reorder), ("renumber", renumber)):
        out = function_transform("function", f"{name}:f", _record(source, name=name)).transform_batch(IRIS)
        assert list(out.index) == [7, 3, 11] and out["sl"].tolist() == [5.0, 3.0, 6.0], name


def test_a_dask_step_outside_ray_runs_the_same_graph_synchronously(monkeypatch):
    import ray

    from raymlp.data.transform import dask_compute_options, function_transform

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # (integration tests may share this process's Ray)
    assert dask_compute_options() == {"scheduler": "sync"}
    source = "def f(frame):\n    return frame.assign(total=frame.sl + frame.sw)\n"
    out = function_transform("dask", "d:f", _record(source, name="dask_sync")).transform_batch(IRIS)
    assert out["total"].tolist() == [8.0, 8.0, 8.0] and list(out.index) == [7, 3, 11]
    pandas_result = "def f(frame):\n    return frame.compute()\n"
    with pytest.raises(WorkFailed, match="dask step dask_bad@1:f returned DataFrame; it must return a dask DataFrame"):
        function_transform("dask", "d:f", _record(pandas_result, name="dask_bad")).transform_batch(IRIS)


def test_parse_ref():
    from raymlp.data.modules import FunctionRef, parse_ref

    assert parse_ref("transforms:areas") == FunctionRef("transforms", None, "areas")
    assert parse_ref("transforms@12:areas") == FunctionRef("transforms", 12, "areas")
    assert str(parse_ref("t@2:f")) == "t@2:f"
    with pytest.raises(UsageError):
        parse_ref("transforms")


def test_what_a_module_prints_on_import_stays_out_of_json_output(project):
    (project / "chatty.py").write_text("print('loading chatty')\n\ndef f(df):\n    return df\n")
    result = cli(project, "data", "modules", "add", "chatty.py", "--json")
    assert result.returncode == 0 and "loading chatty" in result.stderr
    assert json.loads(result.stdout)["name"] == "chatty"


def test_validate_warns_when_the_catalog_cannot_be_consulted(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        JOB.replace("REF", "transforms:areas").replace(
            "data:\n", "storage: {catalog: 'postgresql://nobody@127.0.0.1:1/none'}\ndata:\n", 1
        )
    )
    result = raymlp("validate", str(job))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "warning: preprocess module refs not checked: cannot consult the catalog at postgresql://nobody@127.0.0.1:1/none"
    )

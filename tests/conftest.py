"""Shared test helpers: real services, with skips that turn into failures under CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


_ANSI = __import__("re").compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STAGE_LINE = __import__("re").compile(r"^( *)([a-z][\w/-]*)( {1,2})\S")
#: How raymlp's own lines begin besides its stage lines (`  convert  wine@1: ...`).
_OWN_PREFIXES = ("warning: ", "error: ", "note: ", "dashboard: ", "report: ")
_TABLE_CHARS = "┏┃┡│└╇┳┻┗━┛┓┠┨╰╭╮╯─"


class _Captured:
    text = ""


@contextmanager
def captured_output() -> Iterator[_Captured]:
    """Everything written inside the block to file descriptors 1 and 2 and to sys.stdout/stderr, by this
    process and its threads (Ray's printing threads included); `.text` once the block ends."""
    import sys
    import tempfile

    captured = _Captured()
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        streams = sys.stdout, sys.stderr
        writer = open(sink.fileno(), "w", buffering=1, closefd=False, errors="replace")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        sys.stdout = sys.stderr = writer
        try:
            yield captured
        finally:
            writer.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")


def screen_lines(transcript: str) -> list[str]:
    """What a terminal shows of a transcript: per line, the text after the last carriage return, without
    colour codes (a progress bar redrawn in place leaves its last frame)."""
    lines = []
    for raw in transcript.replace("\r\n", "\n").split("\n"):
        visible = _ANSI.sub("", raw.split("\r")[-1] if raw.rstrip("\r") else raw).rstrip()
        if visible.strip():
            lines.append(visible)
    return lines


def foreign_lines(transcript: str) -> list[str]:
    """Lines of a command's output that are not raymlp's own: a library's log line, warning, progress
    bar or a Ray worker's output. raymlp prints stage lines (the stage's name right-aligned in 9
    columns, then its message), `warning:`-style lines, rich tables and JSON."""
    import json

    lines = screen_lines(transcript)
    text = "\n".join(lines).strip()
    if text[:1] in "{[":
        try:
            json.loads(text)
            return []
        except ValueError:
            pass
    foreign = []
    for index, line in enumerate(lines):
        stage = _STAGE_LINE.match(line)
        if stage and len(stage.group(1) + stage.group(2)) >= 9:
            continue
        table_title = index + 1 < len(lines) and lines[index + 1].startswith("┏")
        if line.startswith(_OWN_PREFIXES) or table_title or line[0] in _TABLE_CHARS:
            continue
        foreign.append(line)
    return foreign


#: Shapes of lines only libraries print: a logging record's timestamp or level, a Ray process prefix, a
#: tqdm bar, a Python warning or traceback.
_LIBRARY_LINE = __import__("re").compile(
    r"^(\d{4}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d|(DEBUG|INFO|WARNING|ERROR|CRITICAL)[ :]|[IWEF]\d{4} \d\d:|\[[IWE] \d{4}-|\((raylet|autoscaler|"
    r"gcs_server|monitor)\)|\([\w:.-]+ pid=\d+|Traceback \(most recent call last\))|\d+%\||\w+Warning: "
)


def library_lines(transcript: str) -> list[str]:
    """Lines of a command's output shaped as only a library prints them (for commands whose own lines are
    free text; `foreign_lines` holds a `run` to raymlp's exact shapes)."""
    return [line for line in screen_lines(transcript) if _LIBRARY_LINE.search(line)]


def run_job_quietly(*args, **kwargs):
    """`raymlp.run_job`, checking that no library printed a line of its own while it ran (the session's Ray
    and libraries are set up as quiet as the command line sets them up)."""
    from raymlp import run_job

    with captured_output() as captured:
        summary = run_job(*args, **kwargs)
    assert foreign_lines(captured.text) == [], captured.text[-3000:]
    return summary


pytest_plugins = ["tests.s3server"]  # the session's S3 server (`s3_server`) and a bucket per test (`s3_bucket`)

"""Monitoring without Ray: the capture writer and its files, profiles merged piece by piece, the
drift tests against scipy and Evidently's rules, anomalies, windows and unreadable capture files."""

from __future__ import annotations

import datetime
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from raymlp.errors import UsageError
from raymlp.monitor.anomalies import anomalies
from raymlp.monitor.captures import Window, flattened, in_window, parse_window, window_files
from raymlp.monitor.drift import column_drift, corrected
from raymlp.monitor.profile import EXACT_VALUES, Profile, profile_of_table
from raymlp.serve.capture import CaptureBuffer, CaptureSettings, CaptureTableBuilder, check_excluded

FEATURES = [
    {"name": "size", "type": "float"},
    {"name": "rooms", "type": "int"},
    {"name": "city", "type": "string"},
    {"name": "secret", "type": "string"},
]


def _wine_train() -> pd.DataFrame:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    features = load_wine(as_frame=True).frame.drop(columns="target")
    return train_test_split(features, test_size=0.3, random_state=42)[0]


def _profile(frame: pd.DataFrame) -> Profile:
    return profile_of_table(pa.Table.from_pandas(frame, preserve_index=False))


def test_drift_in_two_of_wines_features_is_found_and_resampled_windows_rarely_flag():
    train = _wine_train()
    reference = _profile(train)
    rng = np.random.default_rng(7)
    flagged = tested = 0
    for _ in range(20):
        window = _profile(train.sample(300, replace=True, random_state=int(rng.integers(1 << 30))))
        for column in train.columns:
            result = column_drift(reference.columns[column], window.columns[column])
            tested += 1
            flagged += result.drifted
    assert tested == 260 and flagged <= 0.05 * tested

    shifted = train.sample(300, replace=True, random_state=1).copy()
    for column in ("alcohol", "color_intensity"):
        shifted[column] += 1.5 * train[column].std()
    window = _profile(shifted)
    results = {column: column_drift(reference.columns[column], window.columns[column]) for column in train.columns}
    assert {column for column, result in results.items() if result.drifted} == {"alcohol", "color_intensity"}
    assert results["alcohol"].test == "ks"  # 124 reference rows: Evidently's small-sample test
    assert results["alcohol"].score == pytest.approx(stats.ks_2samp(train["alcohol"], shifted["alcohol"]).pvalue)


def test_tests_follow_evidentlys_choice_and_match_scipy_on_exact_values():
    rng = np.random.default_rng(0)
    big = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 5000),
            "few": rng.integers(0, 3, 5000).astype(float),
            "color": rng.choice(["red", "green", "blue"], 5000),
            "flag": rng.choice([True, False], 5000),
        }
    )
    moved = big.copy()
    moved["x"] = moved["x"] + 0.5
    reference, current = _profile(big), _profile(moved)
    x = column_drift(reference.columns["x"], current.columns["x"])
    assert x.test == "wasserstein" and x.drifted
    assert x.score == pytest.approx(stats.wasserstein_distance(big["x"], moved["x"]) / np.std(big["x"]))
    assert column_drift(reference.columns["few"], current.columns["few"]).test == "jensenshannon"
    assert column_drift(reference.columns["color"], current.columns["color"]).test == "jensenshannon"
    small = _profile(big.head(500))
    assert column_drift(small.columns["few"], current.columns["few"]).test == "chisquare"
    assert column_drift(small.columns["color"], current.columns["color"]).test == "chisquare"
    assert column_drift(small.columns["flag"], current.columns["flag"]).test == "z"
    psi = column_drift(reference.columns["x"], current.columns["x"], test="psi", threshold=0.2)
    assert psi.test == "psi" and psi.threshold == 0.2 and psi.score > 0.2


def test_profiles_merged_from_pieces_equal_the_whole_and_sketches_stay_within_their_error():
    rng = np.random.default_rng(1)
    rows = 3 * EXACT_VALUES
    frame = pd.DataFrame({"x": rng.lognormal(0, 1, rows), "c": rng.choice(list("abcde"), rows)})
    frame.loc[::97, "x"] = np.nan
    whole = _profile(frame)
    merged = Profile()
    for start in range(0, rows, 40_000):
        merged.merge(_profile(frame.iloc[start : start + 40_000]))
    x, whole_x = merged.columns["x"], whole.columns["x"]
    assert (x.rows, x.missing, x.minimum, x.maximum) == (
        whole_x.rows,
        whole_x.missing,
        whole_x.minimum,
        whole_x.maximum,
    )
    assert x.values is None  # beyond the exact limit: the sketch answers
    values = frame["x"].dropna().to_numpy()
    for rank in (0.1, 0.5, 0.9, 0.99):
        assert abs(np.mean(values <= x.quantiles(np.array([rank]))[0]) - rank) <= 2 * x.rank_error()
    assert merged.columns["c"].counts == frame["c"].value_counts().to_dict()
    stored = Profile.from_json(merged.to_json())
    assert stored.columns["x"].quantiles(np.array([0.5])) == pytest.approx(x.quantiles(np.array([0.5])))
    assert stored.rows == rows


def test_sketched_ks_agrees_with_scipy_within_the_sketch_error():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 120_000), rng.normal(0.02, 1, 120_000)
    reference, current = _profile(pd.DataFrame({"x": a})), _profile(pd.DataFrame({"x": b}))
    assert reference.columns["x"].values is None
    exact = stats.ks_2samp(a, b).statistic
    sketched = column_drift(reference.columns["x"], current.columns["x"], test="ks")
    statistic = float(sketched.note.split("=")[1].split()[0])
    assert abs(statistic - exact) <= 2 * reference.columns["x"].rank_error() + 2 * current.columns["x"].rank_error()


def test_corrections_reduce_false_alarms():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({f"c{index}": rng.normal(size=400) for index in range(30)})
    reference = _profile(frame.head(200))
    current = _profile(frame.tail(200))
    results = [column_drift(reference.columns[name], current.columns[name]) for name in frame.columns]
    for method in ("bonferroni", "fdr"):
        adjusted = corrected(results, method)
        assert sum(result.drifted for result in adjusted) <= sum(result.drifted for result in results)
    strong = [result for result in results]
    assert corrected(strong, "none") == strong


def test_anomalies_name_columns_types_categories_missing_values_and_ranges():
    reference = _profile(pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"], "c": [1, 2, 3], "gone": [1, 1, 1]}))
    current = _profile(
        pd.DataFrame({"a": [None, None, 9.0], "b": ["x", "z", "<w>"], "c": ["1", "2", "3"], "new": [0, 0, 0]})
    )
    found = {(anomaly.column, anomaly.kind): anomaly.message for anomaly in anomalies(reference, current)}
    assert ("gone", "missing_column") in found and ("new", "extra_column") in found
    assert ("c", "type_change") in found and "int" in found[("c", "type_change")]
    assert ("b", "unseen_category") in found and "'z'" in found[("b", "unseen_category")]
    assert ("a", "null_rate") in found and ("a", "out_of_range") in found
    assert "9" in found[("a", "out_of_range")]


def _builder(exclude: tuple[str, ...] = ()) -> CaptureTableBuilder:
    return CaptureTableBuilder(FEATURES, exclude, ["cheap", "dear"])


def _record(index: int) -> dict:
    return {"size": 50.0 + index, "rooms": index % 4, "city": "<Paris>", "secret": "s3cr3t"}


def _answer(index: int) -> dict:
    return {"prediction": "dear" if index % 2 else "cheap", "probabilities": {"cheap": 0.25, "dear": 0.75}}


def test_the_capture_writes_whole_parquet_files_by_version_and_day_and_never_the_excluded_fields(tmp_path):
    settings = CaptureSettings(root=str(tmp_path), model="houses", flush_s=3600, exclude=("secret",))
    buffer = CaptureBuffer(settings, {"job": "j", "stage": "serve", "app": "a", "route": "/", "version": ""})
    builder = _builder(settings.exclude)
    now = time.time()
    for index in range(10):
        buffer.offer(
            f"r{index}",
            now,
            1.5,
            3 if index < 7 else 4,
            builder,
            [_record(index), _record(index + 1)],
            [_answer(index), _answer(index + 1)],
        )
    assert buffer.flush() == 20 and buffer.captured == 20 and buffer.dropped == 0
    buffer.close()
    written = sorted(path for path in tmp_path.rglob("*.parquet"))
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert {path.relative_to(tmp_path).parts[:4] for path in written} == {
        ("captures", "model=houses", "version=3", f"date={today}"),
        ("captures", "model=houses", "version=4", f"date={today}"),
    }
    assert not list(tmp_path.rglob(".*"))  # no temporary file left behind
    table = pa.concat_tables([pq.read_table(path) for path in written])
    assert table.num_rows == 20 and b"s3cr3t" not in b"".join(path.read_bytes() for path in written)
    assert table.column("features").type.names == ["size", "rooms", "city"]
    flat = flattened(table)
    assert set(flat.column_names) >= {"request_id", "record", "time", "size", "city", "probability_dear"}
    assert flat.column("city").to_pylist()[0] == "<Paris>"
    found = window_files(str(tmp_path), "houses", Window())
    assert found.rows == 20 and sorted(found.versions) == ["3", "4"] and not found.skipped


def test_a_full_capture_buffer_drops_and_counts_without_blocking(tmp_path):
    settings = CaptureSettings(root=str(tmp_path), model="m", flush_s=3600, max_buffer_rows=5)
    buffer = CaptureBuffer(settings, {"job": "j", "stage": "serve", "app": "a", "route": "/", "version": ""})
    builder = _builder()
    started = time.perf_counter()
    for index in range(1000):
        buffer.offer(str(index), time.time(), 1.0, 1, builder, [_record(index)], [_answer(index)])
    assert time.perf_counter() - started < 1.0
    assert buffer.flush() == 5 and buffer.dropped == 995
    buffer.close()


def test_sampling_keeps_about_the_share_asked_for(tmp_path):
    settings = CaptureSettings(root=str(tmp_path), model="m", flush_s=3600, sample=0.2)
    buffer = CaptureBuffer(settings, {"job": "j", "stage": "serve", "app": "a", "route": "/", "version": ""})
    builder = _builder()
    for index in range(5000):
        buffer.offer(str(index), time.time(), 1.0, 1, builder, [_record(index)], [_answer(index)])
    kept = buffer.flush()
    buffer.close()
    assert 800 <= kept <= 1200


def test_an_unknown_excluded_field_is_refused():
    with pytest.raises(ValueError, match="secrte.*no feature"):
        check_excluded(FEATURES, ["secrte"])


def test_corrupt_and_foreign_capture_files_are_skipped_and_named(tmp_path):
    settings = CaptureSettings(root=str(tmp_path), model="m", flush_s=3600)
    buffer = CaptureBuffer(settings, {"job": "j", "stage": "serve", "app": "a", "route": "/", "version": ""})
    buffer.offer("r", time.time(), 1.0, 1, _builder(), [_record(1)], [_answer(1)])
    buffer.close()
    folder = next(tmp_path.rglob("date=*"))
    (folder / "part-broken.parquet").write_bytes(b"PAR1 not really")
    pq.write_table(pa.table({"x": [1]}), folder / "part-foreign.parquet")
    found = window_files(str(tmp_path), "m", Window())
    assert found.rows == 1 and len(found.files) == 1
    reasons = {entry["path"].rsplit("/", 1)[-1]: entry["reason"] for entry in found.skipped}
    assert "not a readable Parquet file" in reasons["part-broken.parquet"]
    assert "not a raymlp capture file" in reasons["part-foreign.parquet"]


def test_windows_by_duration_times_and_rows():
    now = datetime.datetime(2026, 12, 7, 12, tzinfo=datetime.UTC)
    assert parse_window("24h", now=now).since == now - datetime.timedelta(hours=24)
    window = parse_window(None, since="2026-12-01", until="2026-12-02T06:00:00Z")
    assert window.since == datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC) and window.until.hour == 6
    for bad in ("24", "-3h", "1y"):
        with pytest.raises(UsageError, match="--window"):
            parse_window(bad)
    with pytest.raises(UsageError, match="not after"):
        parse_window(None, since="2026-12-02", until="2026-12-01")
    table = pa.table(
        {"time": pa.array([now - datetime.timedelta(hours=hours) for hours in (1, 30)], pa.timestamp("us", tz="UTC"))}
    )
    assert in_window(table, parse_window("24h", now=now)).num_rows == 1


def test_the_confidence_estimate_without_labels_is_within_five_points_under_covariate_shift():
    """CBPE's setting: P(y | x) kept, the features' distribution moved; calibrated on held-out rows."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from raymlp.monitor.analysis import confidence_calibration, merge_partials, window_partial

    x, y = make_classification(
        n_samples=40_000, n_features=6, n_informative=4, n_redundant=0, flip_y=0.05, class_sep=0.8, random_state=0
    )
    model = LogisticRegression(max_iter=1000).fit(x[:5000], y[:5000])
    calibration = confidence_calibration(model.predict_proba(x[5000:7000]), model.predict(x[5000:7000]) == y[5000:7000])
    pool_x, pool_y = x[7000:], y[7000:]
    rng = np.random.default_rng(0)
    weight = 1.0 / (1.0 + np.exp(-2.0 * pool_x[:, 0]))  # rows with a large first feature are favoured
    chosen = rng.random(len(pool_x)) < weight
    window_x, window_y = pool_x[chosen], pool_y[chosen]
    probabilities = model.predict_proba(window_x)
    predicted = probabilities.argmax(axis=1)
    features = [{"name": f"x{index}", "type": "float"} for index in range(6)]
    builder = CaptureTableBuilder(features, (), ["0", "1"])
    requests = [
        (
            f"r{row}",
            time.time(),
            1.0,
            1,
            "serve",
            [{f"x{index}": float(window_x[row, index]) for index in range(6)}],
            [
                {
                    "prediction": str(predicted[row]),
                    "probabilities": {"0": probabilities[row, 0], "1": probabilities[row, 1]},
                }
            ],
        )
        for row in range(len(window_x))
    ]
    block = builder.table(requests)
    now = int(time.time() * 1_000_000)
    plan = {
        "since": None,
        "until": None,
        "features": [f"x{index}" for index in range(6)],
        "classes": ["0", "1"],
        "edges": [now - 10**9, now + 10**9],
        "calibration": calibration,
        "labels": None,
    }
    summary = merge_partials([window_partial(block.slice(0, 5000), plan), window_partial(block.slice(5000), plan)])
    estimated = sum(entry["expected_correct"] for entry in summary.buckets.values()) / summary.rows
    truth = float((predicted == window_y).mean())
    assert summary.rows == len(window_x) and abs(estimated - truth) <= 0.05, (estimated, truth)
    assert 0.6 < truth < 0.95  # a model that errs, so the estimate has something to estimate


def test_a_capture_in_a_bucket_is_written_listed_checked_and_labelled_there(s3_bucket):
    from raymlp.monitor.labels import read_labels
    from raymlp.serve.capture import labels_folder
    from raymlp.storage import files

    settings = CaptureSettings(root=f"{s3_bucket}/store", model="houses", flush_s=3600, exclude=("secret",))
    buffer = CaptureBuffer(settings, {"job": "j", "stage": "serve", "app": "a", "route": "/", "version": ""})
    builder = _builder(settings.exclude)
    for index in range(5):
        buffer.offer(f"r{index}", time.time(), 1.0, 7, builder, [_record(index)], [_answer(index)])
    buffer.close()
    found = window_files(settings.root, "houses", Window())
    assert found.rows == 5 and found.versions == ["7"] and all(name.startswith("s3://") for name in found.files)
    assert found.first_time is not None and found.first_time <= time.time()
    with files.open_input(found.files[0]) as handle:
        table = flattened(pq.read_table(handle))
    assert "secret" not in table.column_names and table.column("request_id").to_pylist() == [f"r{i}" for i in range(5)]
    labelled_at = pa.array([datetime.datetime.now(datetime.UTC)] * 2, pa.timestamp("us", tz="UTC"))
    for label in ("cheap", "dear"):  # two joins of one row: the later wins
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.table(
                {
                    "request_id": ["r1", "r2"],
                    "record": pa.array([0, 0], pa.int32()),
                    "label": [label] * 2,
                    "labelled_at": labelled_at,
                }
            ),
            sink,
        )
        files.write_bytes(
            files.join(labels_folder(settings.root, "houses"), f"labels-{label}.parquet"), sink.getvalue().to_pybytes()
        )
        labelled_at = pa.array(
            [datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)] * 2, pa.timestamp("us", tz="UTC")
        )
    assert read_labels(settings.root, "houses").column("label").to_pylist() == ["dear", "dear"]


def test_a_regression_window_is_reported_with_measured_errors_and_no_estimate():
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    from raymlp.monitor.analysis import Settings, build_report, merge_partials, reference_of, window_partial
    from raymlp.monitor.captures import WindowFiles
    from raymlp.package import ModelPackage

    data = load_diabetes(as_frame=True)
    names = list(data.data.columns)
    estimator = LinearRegression().fit(data.data.to_numpy()[:300], data.target.to_numpy()[:300])
    description = {
        "framework": "sklearn",
        "task": "regression",
        "label": "target",
        "features": [{"name": name, "type": "float"} for name in names],
        "model": {"feature_columns": names},
    }
    package = ModelPackage(path=None, description=description, preprocessor=None, network=estimator)
    reference = reference_of(package, pa.Table.from_pandas(data.data.iloc[:300], preserve_index=False), "diabetes")
    window = data.data.iloc[300:]
    predicted = package.predict(window)["prediction"].to_numpy()
    builder = CaptureTableBuilder(package.features, (), None)
    now = time.time()
    requests = [
        (f"q{row}", now, 1.0, 1, "serve", [window.iloc[row].to_dict()], [{"prediction": float(predicted[row])}])
        for row in range(len(window))
    ]
    labels = {"request_id": [f"q{row}" for row in range(len(window))], "record": [0] * len(window)}
    labels["label"] = [str(value) for value in data.target.iloc[300:]]
    edges = [int((now - 1) * 1e6), int((now + 1) * 1e6)]
    plan = {
        "since": None,
        "until": None,
        "features": names,
        "classes": [],
        "edges": edges,
        "calibration": None,
        "labels": labels,
    }
    summary = merge_partials([window_partial(builder.table(requests), plan)])
    report = build_report(
        model="diabetes",
        versions=["1"],
        package=package,
        window=Window(),
        files=WindowFiles(),
        summary=summary,
        reference=reference,
        settings=Settings(),
        edges=edges,
    ).report
    truth = data.target.iloc[300:].to_numpy()
    rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
    assert report["performance"]["measured"]["metrics"]["rmse"] == pytest.approx(rmse)
    assert report["performance"]["estimated"] is None and report["performance"]["metric"] == "rmse"
    assert report["drift"]["prediction"]["kind"] == "numeric" and "mean" in report["predictions_over_time"][0]
    assert report["drift"]["columns_tested"] == len(names)

"""Runs tables as `mixforge search fit` reads them (mixers/runs_file.py), of every awkward kind:
duplicate run ids (identical rows kept once and counted; different values an error naming the id
and rows), duplicate column names (an error naming the column), and, generated with hypothesis,
CSV/TSV/Parquet tables with missing, non-numeric, non-finite and huge values, unicode and repeated
column names, CRLF, a BOM, empty files and header-only files. The property: a valid RunsData whose
runs plus the rows it counted as left out are the table's rows, or one InputError paragraph naming
the file; never another exception. A subset goes through the real CLI in a subprocess."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import mixforge_cmd
from mixforge.errors import InputError
from mixforge.mixers.runs_file import load_runs

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "150"))
CLI_EXAMPLES = max(4, EXAMPLES // 25)


def _table(rows: list[list], header: list[str], path, *, crlf=False, bom=False) -> None:
    """`rows` under `header` as CSV/TSV (by the suffix; written by hand so repeated names stay) or Parquet."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def column(values):
            if all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
            return pa.array([None if v is None else str(v) for v in values], type=pa.string())

        pq.write_table(pa.table([column([r[i] for r in rows]) for i in range(len(header))], names=header), path)
        return
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if path.suffix == ".tsv" else ",", lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in r] for r in rows])
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"))


def _runs(n: int, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(3), n)
    return [[f"r{i}", *w[i].round(6).tolist(), float(w[i] @ [1.0, 2.0, 3.0] + 0.01 * i)] for i in range(n)]


HEADER = ["run_id", "w_a", "w_b", "w_c", "loss"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_run_id_given_twice_with_different_values_is_an_error_naming_it_and_its_rows(tmp_path, suffix):
    rows = _runs(10)
    rows.append(["r3", *rows[3][1:4], 9.5])  # run r3 measured again, differently: which one is right?
    _table(rows, HEADER, path := tmp_path / f"runs{suffix}")
    with pytest.raises(InputError, match=r"run id 'r3' is given 2 times with different values \(rows 4, 11"):
        load_runs(path, ["loss"])


@pytest.mark.timeout(60)
def test_identical_repeated_rows_are_kept_once_counted_and_warned(tmp_path):
    rows = _runs(10)
    _table(rows + [rows[2], rows[5], rows[2]], HEADER, path := tmp_path / "runs.csv")
    with pytest.warns(UserWarning, match="3 row"):
        data = load_runs(path, ["loss"])
    assert data.run_ids == [f"r{i}" for i in range(10)] and "3 duplicate row(s) (same run id, same values) left out" in data.notes


@pytest.mark.timeout(60)
def test_a_metrics_table_repeating_a_run_is_checked_before_the_join(tmp_path):
    rows = _runs(10)
    _table([r[:4] for r in rows], HEADER[:4], weights := tmp_path / "weights.csv")
    _table([[r[0], r[4]] for r in rows] + [["r7", 0.1]], ["run_id", "loss"], metrics := tmp_path / "metrics.csv")
    with pytest.raises(InputError, match=r"metrics.csv: run id 'r7' is given 2 times"):
        load_runs(weights, ["loss"], metrics=metrics)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_a_column_name_given_twice_is_an_error_naming_it(tmp_path, suffix):
    _table([r[:3] + [r[3] * 2] + r[3:] for r in _runs(10)], ["run_id", "w_a", "w_b", "w_b", "w_c", "loss"],
           path := tmp_path / f"runs{suffix}")
    with pytest.raises(InputError, match=r"column 'w_b' is given 2 times"):
        load_runs(path, ["loss"])


@pytest.mark.timeout(300)
def test_a_large_table_shows_progress_per_phase_with_rates(tmp_path):
    _table(_runs(5_000), HEADER, path := tmp_path / "runs.parquet")
    run = subprocess.run(mixforge_cmd() + ["search", "fit", "--runs", str(path), "--target", "loss", "--predictor", "linear",
                                           "--candidates", "1000"], capture_output=True, text=True, timeout=280,
                         env={**os.environ, "MIXFORGE_PROGRESS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"read .*runs\.parquet: 5,000 runs, 3 components in [\d.]+ s \([\d,]+ runs/s\)", run.stderr), run.stderr
    assert re.search(r"cross-validation \(linear\): 5/5 fits of 5,000 runs .*fits/s", run.stderr), run.stderr
    assert re.search(r"scored [\d,]+ candidate mixtures in [\d.]+ s \([\d,]+ mixtures/s\)", run.stderr), run.stderr


# --- generated tables ---------------------------------------------------------------------------

NAMES = st.sampled_from(["run_id", "w_a", "w_b", "w_c", "loss", "wéight", "w_ü", "名前", "w_a b", ""])
VALUES = st.one_of(
    st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),  # mostly ordinary shares
    st.none(), st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.just(-1.0), st.just(1e308),
    st.just(-1e308), st.just(0.0), st.sampled_from(["x", "1,5", "1e999", "", " ", "NaN", "true", "ü"]),
)


CLEAN = {"weight": st.one_of(*[st.floats(0.01, 1)] * 8, st.none()),  # empty weights are 0
         "loss": st.one_of(*[st.floats(0, 5)] * 6, st.none(), st.just(float("nan")))}  # runs without one are left out


@st.composite
def tables(draw):
    """(suffix, header, rows, crlf, bom, empty): half of them nearly valid (so the fit's checks and
    counts are reached), half with every kind of damage."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".parquet"]))
    header = list(HEADER)
    if draw(st.integers(0, 3)) == 0:
        header = draw(st.lists(NAMES, min_size=1, max_size=6)) if draw(st.booleans()) else header + [draw(NAMES)]
    n = draw(st.integers(0, 14))
    clean = draw(st.booleans())
    n = max(n, 3) if clean else n  # header-only and one-run tables come from the damaged half
    values = (lambda name: CLEAN["loss" if name == "loss" else "weight"]) if clean else (lambda name: VALUES)
    ids = (lambda i: f"r{i}") if clean else (lambda i: draw(st.sampled_from([f"r{i}", f"r{i % 4}", None, "ü"])))
    rows = [[ids(i) if name == "run_id" else draw(values(name)) for name in header] for i in range(n)]
    if rows and draw(st.booleans()):
        rows.append(list(draw(st.sampled_from(rows))))  # a repeated row
    empty = draw(st.integers(0, 20)) == 13
    return suffix, header, rows, draw(st.booleans()), draw(st.booleans()), empty


def _left_out(notes: list[str]) -> int:
    return sum(int(m[1]) for note in notes if "left out" in note and (m := re.match(r"(\d+) ", note)))


def _check(path, rows: int | None) -> str | None:
    """load_runs on `path`: the error's text, or None for a valid fit whose rows add up."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_runs(path, ["loss"], min_runs=2)
    except InputError as e:
        message = str(e)
        assert str(path) in message, message
        assert "\n" not in message.strip() and "Traceback" not in message, message
        return message
    assert np.isfinite(data.weights).all() and np.allclose(data.weights.reshape(len(data), -1, len(data.components)).sum(axis=2), 1)
    assert all(np.isfinite(y).all() for y in data.targets.values())
    if rows is not None:
        assert len(data) + _left_out(data.notes) == rows, (len(data), data.notes, rows)
    return None


def _written(tmp_path_factory, table) -> tuple:
    """A generated table written to its file: (path, rows in it, None for an empty file)."""
    suffix, header, rows, crlf, bom, empty = table
    path = tmp_path_factory.mktemp("t") / f"runs{suffix}"
    if empty:
        path.write_bytes(b"")
        return path, None
    _table(rows, header, path, crlf=crlf, bom=bom)
    return path, len(rows)


@pytest.mark.timeout(600)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(tables())
def test_generated_runs_tables_read_or_fail_with_one_paragraph_naming_the_file(tmp_path_factory, table):
    path, rows = _written(tmp_path_factory, table)
    _check(path, rows)


@pytest.mark.timeout(600)
@settings(derandomize=True, max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(tables())
def test_generated_runs_tables_through_the_cli_never_give_a_traceback(tmp_path_factory, table):
    path, _ = _written(tmp_path_factory, table)
    run = subprocess.run(mixforge_cmd() + ["search", "fit", "--runs", str(path), "--target", "loss", "--predictor", "linear",
                                           "--candidates", "100"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode in (0, 2), run.stderr[-3000:]
    if run.returncode == 2:
        errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]  # after any warnings
        assert len(errors) == 1 and str(path) in errors[0], run.stderr

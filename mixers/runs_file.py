"""Runs tables from anywhere, made ready for fitting: the weights matrix, the target column(s)
and the run ids, with every problem reported by column or row.

Accepted layouts (CSV or Parquet):
- one table: a row per run, weight columns (by prefix, default `w_`, or named), metric columns;
- two tables: weights in one, metrics in the other, joined on a run id column (default `run_id`).
Weights may be shares or raw amounts: each row is normalised to sum to 1 (rows within 1% of 1 are
counted in one summary line, rows further off are listed in a warning; a row of zeros or a negative
weight is an error). A target that is infinite in some run is an error naming the runs: unlike an
empty value it is not a missing measurement but a diverged run, and dropping it silently would
hide the worst mixtures from the fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mixforge.errors import InputError

MIN_RUNS = 8  # below this, 5-fold cross-validation leaves folds of one run and no model ranks anything


@dataclass
class RunsData:
    """Weights [n, k] over `components`, target columns by name, and the run ids."""

    components: list[str]
    weights: np.ndarray
    targets: dict[str, np.ndarray]
    run_ids: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)
    phases: int = 1  # a multi-phase schedule per run: weights hold one block of len(components) per phase

    def __len__(self) -> int:
        return len(self.weights)


def read_table(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"runs table {path} not found")
    if path.suffix not in (".parquet", ".csv", ".tsv") and not path.is_dir():
        raise InputError(f"runs table {path}: expected a .parquet, .csv or .tsv file")
    _check_header(path)
    try:
        if path.suffix == ".parquet" or path.is_dir():
            return pl.read_parquet(path)
        return pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",", infer_schema_length=None)
    except Exception as e:  # polars raises several error types for broken files
        raise InputError(f"runs table {path} does not read: {e}") from None


def _check_header(path: Path) -> None:
    """A column name given twice is an error naming it (polars would rename the second copy of a
    CSV column to `<name>_duplicated_0`, and a weight or target would be read from one of them)."""
    import csv
    from collections import Counter

    try:
        if path.suffix == ".parquet" or path.is_dir():
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names if path.is_file() else []
        else:
            with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
                names = next(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ","), [])
    except Exception:  # unreadable: the read below reports it
        return
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise InputError(f"runs table {path}: column {twice[0]!r} is given {names.count(twice[0])} times"
                         + (f" (and {', '.join(map(repr, twice[1:]))})" if len(twice) > 1 else "") + ": rename or drop the copies")


def load_runs(path: str | Path, targets: list[str], *, metrics: str | Path | None = None, id_column: str = "run_id",
              weight_prefix: str = "w_", weight_columns: list[str] | None = None, min_runs: int = MIN_RUNS,
              table: pl.DataFrame | None = None) -> RunsData:
    """Read a runs table (or use `table`) and check it. `targets` are metric column names."""
    frame = table if table is not None else read_table(path)
    where = str(path)
    notes = []
    frame = _unique_runs(frame, id_column, where, notes)
    columns = weight_columns or [c for c in frame.columns if c.startswith(weight_prefix)]
    phases, columns = _phase_columns(frame, weight_prefix, where) if not columns else (1, columns)
    if metrics is not None:
        other = read_table(metrics)
        id_column = _join_column(frame, other, id_column, where, str(metrics), notes)
        # here, not in a helper: _unique_runs' warning points at load_runs' caller
        frame = _unique_runs(frame, id_column, where, notes)
        other = _unique_runs(other, id_column, str(metrics), notes)
        if not columns:  # two files (RegMix's layout): every other number in the weights file is a weight
            columns = [c for c in frame.columns if c != id_column and frame[c].dtype.is_numeric()]
            weight_prefix = _common_prefix(columns)
        frame = frame.join(other, on=id_column, how="inner", suffix="_metrics")
        where = f"{path} joined with {metrics} on {id_column}"
    frame = _numeric_columns(frame, columns, targets, weight_prefix, where, notes)
    complete, ids = _complete_runs(frame, targets, id_column, min_runs, where, notes)
    w, sums = _weight_rows(complete, columns, phases, ids, where, notes)
    ys = _target_values(complete, targets, where)
    names = _component_names(columns, phases, weight_prefix, notes)
    normalised = (w / sums[:, None]).reshape(len(ids), -1)
    return RunsData(names, normalised, ys, ids, where, notes, phases)


def _numeric_columns(frame: pl.DataFrame, columns: list[str], targets: list[str], weight_prefix: str, where: str,
                     notes: list) -> pl.DataFrame:
    """`frame` with every target under its own name and the weight and target columns as numbers;
    a missing or non-numeric column is an error naming it."""
    if not columns:
        raise InputError(f"{where}: no weight columns (prefix {weight_prefix!r}); columns found: {', '.join(frame.columns)}")
    resolved = {t: _target_column(frame, t, where, notes) for t in targets}
    frame = frame.with_columns(pl.col(c).alias(t) for t, c in resolved.items() if c != t)
    missing = [c for c in list(columns) + list(targets) if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: column(s) {', '.join(missing)} not found; columns found: {', '.join(frame.columns)}")
    frame = frame.with_columns(_as_numbers(frame[c]) for c in dict.fromkeys(list(columns) + list(targets)))
    for c in list(columns) + list(targets):
        if not frame[c].dtype.is_numeric():
            raise InputError(f"{where}: column {c!r} holds {frame[c].dtype}, not numbers{_first_non_number(frame[c])}")
    return frame


def _complete_runs(frame: pl.DataFrame, targets: list[str], id_column: str, min_runs: int, where: str,
                   notes: list) -> tuple[pl.DataFrame, list[str]]:
    """The runs with a value for every target (the others counted in `notes`) and their ids (a run
    without an id is named by its row); too few runs, or an infinite target, is an error."""
    # rows without a value for a target are left out (a run evaluated before that target existed)
    frame = frame.with_row_index("__row")  # to name a run without an id by its row in the table
    complete = frame.filter(pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in targets]))
    if complete.height < frame.height:
        notes.append(f"{frame.height - complete.height} run(s) without a value for {', '.join(targets)} left out")
    if complete.height < min_runs:
        raise InputError(f"{where}: {complete.height} usable run(s); the predictor needs at least {min_runs}")
    ids = complete[id_column].cast(pl.Utf8).to_list() if id_column in complete.columns else [None] * complete.height
    ids = [f"row {r + 1}" if v is None else v for r, v in zip(complete["__row"], ids)]  # a run without an id: its row
    for t in targets:
        inf = np.flatnonzero(np.isinf(complete[t].to_numpy().astype(float)))
        if len(inf):
            raise InputError(f"{where}: target {t!r} is infinite in run(s) {_rows(ids, inf)}: drop those runs or leave "
                             "the value empty (runs without a value are left out and counted)")
    return complete, ids


def _weight_rows(complete: pl.DataFrame, columns: list[str], phases: int, ids: list[str], where: str,
                 notes: list) -> tuple[np.ndarray, np.ndarray]:
    """The weights, one row per (run, phase), and each row's sum; bad rows are an error, rows not
    summing to 1 are warned about (stacklevel 3: at load_runs' caller) and counted in `notes`."""
    w = complete.select(columns).fill_null(0).to_numpy().astype(float)
    w = w.reshape(len(w) * phases, len(columns) // phases)  # one row per (run, phase): each phase is a mixture
    ids_by_row = [i for i in ids for _ in range(phases)]
    bad = np.flatnonzero(~np.isfinite(w).all(axis=1) | (w < 0).any(axis=1) | (w.sum(axis=1) <= 0))
    if len(bad):
        raise InputError(f"{where}: weights negative, not finite or all zero in run(s) {_rows(ids_by_row, bad)}")
    sums = w.sum(axis=1)
    gap = np.abs(sums - 1)
    near = np.flatnonzero((gap > 1e-3) & (gap <= 0.01))  # rounded shares: one line, not one per run
    if len(near):
        warnings.warn(f"{where}: {len(near)} runs' weights summed to within 1% of 1 and were normalised", stacklevel=3)
    off = np.flatnonzero(gap > 0.01)
    if len(off):
        warnings.warn(f"{where}: weights of run(s) {_rows(ids_by_row, off)} do not sum to 1 (e.g. {sums[off[0]]:.4g}): normalised",
                      stacklevel=3)
    if len(near) + len(off):
        notes.append(f"{len(near) + len(off)} run(s) with weights not summing to 1 normalised")
    return w, sums


def _target_values(complete: pl.DataFrame, targets: list[str], where: str) -> dict[str, np.ndarray]:
    """Each target's values; one that never varies is an error (nothing to learn from)."""
    ys = {t: complete[t].to_numpy().astype(float) for t in targets}
    for t, y in ys.items():
        if np.ptp(y) == 0:
            raise InputError(f"{where}: target {t!r} is {y[0]:g} in every run: nothing to learn from")
    return ys


def _component_names(columns: list[str], phases: int, weight_prefix: str, notes: list) -> list[str]:
    """The components, from the first phase's weight column names without their prefix."""
    names = [c[len(weight_prefix):] if c.startswith(weight_prefix) else c for c in columns[: len(columns) // phases]]
    if phases > 1:
        names = [c.split("_", 1)[1][len(weight_prefix):] for c in columns[: len(columns) // phases]]
        notes.append(f"{phases}-phase schedules: {len(names)} components per phase")
    return names


def _unique_runs(frame: pl.DataFrame, id_column: str, where: str, notes: list) -> pl.DataFrame:
    """One row per run id: rows repeating a run identically are kept once (counted, with a warning);
    one id with different values is an error naming it and its rows (which run is right?)."""
    if id_column not in frame.columns or frame.height == frame[id_column].n_unique():
        return frame
    rows = frame.with_row_index("_row").filter(pl.col(id_column).is_not_null() & pl.col(id_column).is_duplicated())
    for (run,), group in rows.group_by(id_column, maintain_order=True):
        if group.drop("_row").unique().height > 1:
            numbers = ", ".join(str(r + 1) for r in group["_row"].to_list()[:10])
            raise InputError(f"{where}: run id {run!r} is given {group.height} times with different values (rows {numbers}; "
                             "the first run is row 1): keep one row per run")
    indexed = frame.with_row_index("_row")
    first = indexed.unique(subset=frame.columns, keep="first", maintain_order=True)["_row"]
    kept = indexed.filter(pl.col("_row").is_in(first.implode()) | pl.col(id_column).is_null()).drop("_row")
    dropped = frame.height - kept.height
    if dropped:
        warnings.warn(f"{where}: {dropped} row(s) repeating another row of the same run id exactly were left out", stacklevel=3)
        notes.append(f"{dropped} duplicate row(s) (same run id, same values) left out")
    return kept


def _as_numbers(column: pl.Series) -> pl.Series:
    """A text column whose every value reads as a number, as numbers: polars reads a CSV column
    with no value at all, or one holding `nan`/`inf`, as text (their checks come later)."""
    if column.dtype != pl.Utf8:
        return column
    numbers = column.str.strip_chars().cast(pl.Float64, strict=False)
    return numbers if numbers.null_count() == column.null_count() else column


def _first_non_number(column: pl.Series) -> str:
    """' (row 3: 'x')': the first value that does not read as a number, for the error."""
    text = column.cast(pl.Utf8, strict=False)
    bad = (text.is_not_null() & text.str.strip_chars().cast(pl.Float64, strict=False).is_null()).arg_true()
    return f" (row {bad[0] + 1}: {text[bad[0]][:40]!r})" if len(bad) else ""


def _rows(ids: list[str], rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(ids[i] for i in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _join_column(frame: pl.DataFrame, other: pl.DataFrame, id_column: str, where: str, metrics: str, notes: list) -> str:
    """The run id both tables have: `id_column`, else `index` (RegMix's published tables)."""
    for name in (id_column, "index"):
        if name in frame.columns and name in other.columns:
            if name != id_column:
                notes.append(f"joined on {name!r} (no {id_column!r} column in both tables)")
            return name
    raise InputError(f"{where} and {metrics}: no run id column {id_column!r} (or 'index') in both to join on; "
                     f"columns: {', '.join(frame.columns)} / {', '.join(other.columns)}")


def _common_prefix(columns: list[str]) -> str:
    """The longest prefix every weight column shares, cut after its last `_` (train_the_pile_)."""
    import os

    prefix = os.path.commonprefix(columns) if len(columns) > 1 else ""
    return prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""


def _target_column(frame: pl.DataFrame, target: str, where: str, notes: list) -> str:
    """The column a target names: itself, or the one column ending in it after a / or _
    (`pile_cc_val_loss` for RegMix's `metric/the_pile_pile_cc_val_loss`)."""
    if target in frame.columns:
        return target
    ends = [c for c in frame.columns if c.endswith(("/" + target, "_" + target))]
    if len(ends) == 1:
        notes.append(f"target {target!r} is column {ends[0]!r}")
        return ends[0]
    if len(ends) > 1:
        raise InputError(f"{where}: target {target!r} could be any of {', '.join(ends)}: give the whole column name")
    return target  # reported missing with the other columns


def _phase_columns(frame: pl.DataFrame, weight_prefix: str, where: str) -> tuple[int, list[str]]:
    """(phases, columns) for weight columns `phase<p>_<prefix><component>`, phase by phase in
    the same component order; (1, []) when there are none. Every phase must name the same components."""
    import re

    pattern = re.compile(rf"^phase(\d+)_{re.escape(weight_prefix)}(.+)$")
    found: dict[int, dict[str, str]] = {}
    for c in frame.columns:
        if m := pattern.match(c):
            found.setdefault(int(m[1]), {})[m[2]] = c
    if not found:
        return 1, []
    if sorted(found) != list(range(len(found))):
        raise InputError(f"{where}: phase columns for phases {sorted(found)}: expected phase0 to phase{len(found) - 1}")
    names = sorted(found[0])
    for p, cols in found.items():
        if sorted(cols) != names:
            raise InputError(f"{where}: phase{p} weights name {', '.join(sorted(cols))}; phase0 names {', '.join(names)}")
    return len(found), [found[p][n] for p in sorted(found) for n in names]

"""Every numeric option of every command, found by walking the real CLI's commands (a new option
is covered without a test change): non-finite, negative, zero where it means nothing and absurdly
large values are a usage error (exit 2) naming the option, before any work starts. Each case runs
the real `mixforge` in a subprocess; the paths given do not exist, so a value that got through would
fail later with an error that does not name the option."""

from __future__ import annotations

import subprocess

import pytest

from conftest import mixforge_cmd

ZERO_OK = {"--seed"}  # seed 0 is a seed; everywhere else 0 runs, samples, tokens or epochs mean nothing
BAD = ["nan", "inf", "-inf", "-1", "1e308", "1" + "0" * 30]


def numeric_options() -> list[tuple[list[str], str]]:
    """(command words, option) for every int or float option of every command."""
    import typer.main

    from mixforge.cli import app

    found = []

    def walk(command, words):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, words + [name])
            return
        for p in command.params:
            if p.type_descriptor.annotation in (int, float) and p.opts[0].startswith("--"):
                found.append((words, p.opts[0]))

    walk(typer.main.get_command(app), [])
    return found


def _args(words: list[str]) -> list[str]:
    """The command's required arguments and options, as missing paths and plain names."""
    required = {"export": ["missing-mixture", "-c", "missing.yaml", "--out", "missing-out"],
                "search fit": ["--runs", "missing.csv", "--target", "loss"], "deploy": ["missing.yaml", "--name", "n"]}
    return words + required.get(" ".join(words), ["missing.yaml"])


def test_the_walk_finds_the_numeric_options():
    options = {(" ".join(w), o) for w, o in numeric_options()}
    assert {("export", "--max-epochs"), ("export", "--tokens"), ("proxy sweep", "--runs"), ("search fit", "--candidates"),
            ("filter-preview", "--sample")} <= options and len(options) >= 12


@pytest.mark.timeout(180)
@pytest.mark.parametrize("words,option", numeric_options(), ids=lambda v: "-".join(v) if isinstance(v, list) else v)
def test_bad_numbers_are_a_usage_error_naming_the_option(words, option, tmp_path):
    values = BAD + ([] if option in ZERO_OK else ["0"])
    for value in values:
        run = subprocess.run(mixforge_cmd() + _args(words) + [option, value], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, (value, run.stdout, run.stderr)
        assert option in run.stderr, (value, run.stderr)
        assert "Traceback" not in run.stderr


@pytest.mark.timeout(60)
def test_a_non_finite_target_weight_is_a_usage_error(tmp_path):
    run = subprocess.run(mixforge_cmd() + ["search", "missing.yaml", "--target", "a=1,b=nan"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--target" in run.stderr and "nan" in run.stderr, run.stderr

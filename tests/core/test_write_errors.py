"""A full disk, a read-only filesystem or a folder without write permission (issue 22, item 4):
`build` (datatrove's workers and mixforge's own stages) and `export` stop with one paragraph that
names the path, the free space there and what to do, exit 2, no traceback; nothing half-written
is published; after freeing the space the same command completes with outputs identical to an
uninterrupted run (the session's `slice_built`, and an export made on an ordinary disk).

The filesystems are real: a small tmpfs mounted in a private mount namespace (`unshare -rm`:
root or not, where user namespaces are allowed), filled with a file to a chosen free space, the
command run there, the filler deleted, the command rerun, the results copied out before the
namespace goes. Permission denied uses a folder without write permission; as root (whom mode
bits do not stop) the command runs without CAP_DAC_OVERRIDE (`setpriv`)."""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import fault_inject_tool, mixforge_cmd, over_slice_built, slice_sources, write_config
from mixforge.pipelines.export.verify import verify_export
from mixforge.write_errors import WRITE_ERRNOS, find_write_error

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "200"))
FS_KIB = 8 * 1024  # the tmpfs; the slice's workspace takes about 3 MiB of it


def _namespaces() -> str | None:
    """Why a private tmpfs cannot be mounted here, or None when it can."""
    if not shutil.which("unshare"):
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


NO_MOUNT = _namespaces()
needs_mount = pytest.mark.skipif(NO_MOUNT is not None, reason=str(NO_MOUNT))

# Runs "$@" twice on a tmpfs mounted at $MNT: first with $FREE KiB free, then after deleting the
# filler; $MNT's content is copied to $KEEP/first and $KEEP/second after each run.
ON_SMALL_FS = r"""
set -u
mount -t tmpfs -o size=${FS}k tmpfs "$MNT" || exit 90
fallocate -l $((FS - FREE))k "$MNT/.filler" || exit 91
(cd "$CWD" && "$@") > "$KEEP/first.out" 2> "$KEEP/first.err"; echo $? > "$KEEP/first.rc"
cp -a "$MNT/." "$KEEP/first"
rm "$MNT/.filler"
(cd "$CWD" && "$@") > "$KEEP/second.out" 2> "$KEEP/second.err"; echo $? > "$KEEP/second.rc"
cp -a "$MNT/." "$KEEP/second"
rm -f "$KEEP/first/.filler"
"""


def _on_small_fs(mnt: Path, free_kib: int, cmd: list[str], cwd: Path) -> dict:
    """Run `cmd` with `free_kib` free on a tmpfs at `mnt`, then again with the space freed:
    {first,second}: (exit code, stdout, stderr), and what `mnt` held after each, copied to keep/."""
    keep = mnt.parent / "keep"
    (keep / "first").mkdir(parents=True)
    (keep / "second").mkdir()
    mnt.mkdir(exist_ok=True)
    env = dict(os.environ, FS=str(FS_KIB), FREE=str(free_kib), MNT=str(mnt), KEEP=str(keep), CWD=str(cwd))
    run = subprocess.run(["unshare", "-rm", "sh", "-c", ON_SMALL_FS, "sh", *cmd], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0 and (keep / "second.rc").exists(), run.stderr
    return {step: (int((keep / f"{step}.rc").read_text()), (keep / f"{step}.out").read_text(),
                   (keep / f"{step}.err").read_text()) for step in ("first", "second")} | {"keep": keep}


def _one_paragraph(code: int, stderr: str, *named: str) -> str:
    """The failure's message: exit 2, `error: cannot write|access PATH: ... (N free of M on that filesystem)`, one line."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert code == 2 and "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(("error: cannot write /", "error: cannot access /")) and "rerun the same command" in lines[0], lines[0]
    for text in named:
        assert text.lower() in lines[0].lower(), lines[0]
    return lines[0]


@needs_mount
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("free_kib, where", [(200, "ingest.partial"), (2200, "tokens.partial")],
                         ids=["in datatrove's ingest workers", "in mixforge's tokens stage"])
def test_a_build_on_a_full_disk_stops_with_one_message_and_the_rerun_is_identical(slice_built, tmp_path, free_kib, where):
    data, clean_ws = slice_built
    fi = fault_inject_tool()
    config = write_config(tmp_path, slice_sources(data))  # workspace tmp_path/ws: the tmpfs
    runs = _on_small_fs(tmp_path / "ws", free_kib, mixforge_cmd() + ["build", str(config)], tmp_path)
    message = _one_paragraph(*runs["first"][::2], str(tmp_path / "ws"), where, "No space left on device", "free of 8.0 MiB")
    print(f"full disk ({free_kib} KiB free): {message}")
    assert runs["second"][0] == 0, runs["second"][2][-3000:]
    # what the failed build left: nothing looks complete that is not (checked on a copy, the tmpfs is gone)
    keep = runs["keep"]
    os.rmdir(tmp_path / "ws")
    (keep / "first").rename(tmp_path / "ws")
    assert fi.after_kill(tmp_path, dict(os.environ)) == []
    shutil.rmtree(tmp_path / "ws")
    (keep / "second").rename(tmp_path / "ws")
    shutil.rmtree(keep)
    assert fi.differences(fi.outputs(tmp_path), fi.outputs(clean_ws.parent)) == [] and fi.leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def export_cmd(slice_built, tmp_path_factory):
    """An export command over the slice's workspace (read only), less --out."""
    folder = tmp_path_factory.mktemp("write-errors")
    config, comps = over_slice_built(slice_built, folder)
    (folder / "mix.yaml").write_text("".join(f"{c}: {w}\n" for c, w in zip(comps, [0.6, 0.4, 0.3, 0.2])))
    return mixforge_cmd() + ["export", str(folder / "mix.yaml"), "-c", str(config), "--format", "jsonl"]


def _same_export(a: Path, b: Path) -> None:
    """The same files and manifest, but for the time it was made."""
    ma, mb = (json.loads((f / "manifest.json").read_text()) for f in (a, b))
    assert {k: v for k, v in ma.items() if k != "created_at"} == {k: v for k, v in mb.items() if k != "created_at"}
    files = lambda f: {p.relative_to(f).as_posix(): p.read_bytes() for p in f.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert files(a).keys() == files(b).keys()


@needs_mount
@pytest.mark.timeout(600)
def test_an_export_to_a_full_disk_stops_with_one_message_and_the_rerun_is_identical(export_cmd, tmp_path):
    reference = tmp_path / "reference"
    assert subprocess.run(export_cmd + ["--out", str(reference)], capture_output=True, timeout=300).returncode == 0
    mnt = tmp_path / "disk"
    runs = _on_small_fs(mnt, 100, export_cmd + ["--out", str(mnt / "mix")], tmp_path)
    message = _one_paragraph(*runs["first"][::2], str(mnt), "No space left on device", "free of 8.0 MiB")
    print(f"full disk during export: {message}")
    assert sorted(p.name for p in (runs["keep"] / "first").iterdir()) == []  # no export, no partial one, no lock
    assert runs["second"][0] == 0, runs["second"][2][-3000:]
    second = runs["keep"] / "second" / "mix"
    assert verify_export(second) == [] and sorted(p.name for p in second.parent.iterdir()) == ["mix"]
    _same_export(second, reference)


@needs_mount
@pytest.mark.timeout(600)
def test_a_read_only_filesystem_is_named_for_build_and_export(export_cmd, slice_built, tmp_path):
    data, _ = slice_built
    ro = r"""mount -t tmpfs -o size=1m tmpfs "$MNT" && mkdir "$MNT/ws" && mount -t tmpfs -o remount,ro tmpfs "$MNT" || exit 90
    "$@" """
    config = write_config(tmp_path, slice_sources(data), workspace=str(tmp_path / "ro" / "ws"))
    (tmp_path / "ro").mkdir()
    for cmd in (mixforge_cmd() + ["build", str(config)], export_cmd + ["--out", str(tmp_path / "ro" / "mix")]):
        run = subprocess.run(["unshare", "-rm", "sh", "-c", ro, "sh", *cmd], env=dict(os.environ, MNT=str(tmp_path / "ro")),
                             capture_output=True, text=True, timeout=300)
        _one_paragraph(run.returncode, run.stderr, str(tmp_path / "ro"), "Read-only file system", "remount it writable")


@pytest.mark.timeout(600)
def test_permission_denied_is_named_and_the_rerun_after_fixing_it_completes(export_cmd, slice_built, tmp_path):
    """A folder without write permission; as root the commands run without CAP_DAC_OVERRIDE."""
    data, _ = slice_built
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("as root, mode bits stop no write: dropping CAP_DAC_OVERRIDE needs setpriv(1)")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        run = subprocess.run(prefix + export_cmd + ["--out", str(locked / "mix")], capture_output=True, text=True, timeout=300)
        _one_paragraph(run.returncode, run.stderr, str(locked), "Permission denied", "write for the workspace or --out")
        config = write_config(tmp_path, slice_sources(data), workspace=str(locked / "ws"))
        run = subprocess.run(prefix + mixforge_cmd() + ["build", str(config)], capture_output=True, text=True, timeout=300)
        _one_paragraph(run.returncode, run.stderr, str(locked), "Permission denied")
        assert sorted(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
    run = subprocess.run(prefix + export_cmd + ["--out", str(locked / "mix")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and verify_export(locked / "mix") == [], run.stderr[-2000:]


WRAPS = {  # how a write failure reaches the CLI: raised, as a cause, as a context, as text (a worker's, a library's)
    "raised": lambda e: e,
    "cause": lambda e: _chained(e, RuntimeError("while writing a shard"), cause=True),
    "context": lambda e: _chained(e, ValueError("cleanup failed"), cause=False),
    "text": lambda e: RuntimeError(f"task 3 failed: {e}"),
}


@pytest.mark.timeout(60)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(code=st.sampled_from(sorted(errno.errorcode)), filename=st.sampled_from([None, "/ws/ingest.partial/docs/00000.parquet"]),
       wraps=st.lists(st.sampled_from(sorted(WRAPS)), max_size=4))
def test_a_write_failure_is_found_however_it_is_wrapped(code, filename, wraps):
    """Found exactly when its errno is a write failure's (EACCES/EPERM only on a file: an EPERM
    without one is a signal to a process), with its path unless it became text without one."""
    error = OSError(code, os.strerror(code), *([filename] if filename else []))
    for how in wraps:
        error = WRAPS[how](error)
    found = find_write_error(error)
    expected = code in WRITE_ERRNOS and (code not in (errno.EACCES, errno.EPERM) or filename is not None)
    assert (found is not None) == expected
    if found:
        assert found[0] == code and found[1] in (filename, None)


def _chained(inner: BaseException, outer: BaseException, cause: bool) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            if cause:
                raise outer from inner
            raise outer
    except BaseException as e:
        return e

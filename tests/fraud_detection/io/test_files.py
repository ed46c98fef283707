"""Atomic outputs and input readers: a failed or killed write never leaves a bad file."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.errors import MissingInputError
from fraud_detection.io.files import (
    atomic_path,
    parquet_frame,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
    write_text,
)
from fraud_detection.params import SplitParams


class InterruptedWriteError(Exception):
    """Stands for anything that goes wrong halfway through writing an output."""


def fail_while_writing(target: Path, write: Callable[[Path], object]) -> None:
    """Write through atomic_path, then fail before the block completes."""
    with atomic_path(target) as temporary:
        write(temporary)
        raise InterruptedWriteError


def make_model_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "MLmodel").write_text("v3", encoding="utf-8")


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ atomic_path


def test_atomic_path_writes_the_target_and_cleans_up(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as temporary:
        assert temporary.name == "out.txt"
        assert temporary.parent.parent == tmp_path  # staged beside the target
        assert temporary.parent.name.startswith(".out.txt.")
        assert temporary.parent.name.endswith(".tmp")
        temporary.write_text("hello", encoding="utf-8")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text(encoding="utf-8") == "hello"
    assert entries(tmp_path) == ["out.txt"]


def test_atomic_path_creates_missing_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("x", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "x"


def test_exception_leaves_no_target_and_no_temporary_files(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(InterruptedWriteError):
        fail_while_writing(target, lambda temporary: temporary.write_bytes(b"PAR1 half a file"))
    assert not target.exists()
    assert entries(tmp_path) == []


def test_previous_target_survives_a_failed_rewrite(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(InterruptedWriteError):
        fail_while_writing(target, lambda temporary: temporary.write_text("new", encoding="utf-8"))
    assert target.read_text(encoding="utf-8") == "old"
    assert entries(tmp_path) == ["out.txt"]


def test_writing_nothing_is_an_error_and_keeps_the_previous_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with (
        pytest.raises(RuntimeError, match=r"nothing was written for .*out\.txt"),
        atomic_path(target),
    ):
        pass
    assert target.read_text(encoding="utf-8") == "old"
    assert entries(tmp_path) == ["out.txt"]


def test_successful_rewrite_replaces_the_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with atomic_path(target) as temporary:
        temporary.write_text("new", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "new"
    assert entries(tmp_path) == ["out.txt"]


def test_directories_are_written_and_replaced_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "MLmodel").write_text("v1", encoding="utf-8")
        (temporary / "stale.bin").write_bytes(b"1")
    assert entries(target) == ["MLmodel", "stale.bin"]

    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "MLmodel").write_text("v2", encoding="utf-8")
    assert entries(target) == ["MLmodel"]  # nothing left over from the old folder
    assert (target / "MLmodel").read_text(encoding="utf-8") == "v2"

    with pytest.raises(InterruptedWriteError):
        fail_while_writing(target, make_model_folder)
    assert (target / "MLmodel").read_text(encoding="utf-8") == "v2"
    assert entries(tmp_path) == ["model"]


# ---------------------------------------------------------------- JSON, parquet


def test_write_json_round_trip(tmp_path):
    target = tmp_path / "reports" / "metrics.json"
    payload = {"auc": 0.87, "folds": [1, 2, 3], "when": dt.date(2018, 8, 8), "name": "ré"}
    write_json(payload, target)
    assert read_json(target, made_by="evaluate") == {
        "auc": 0.87,
        "folds": [1, 2, 3],
        "when": "2018-08-08",
        "name": "ré",
    }
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert list(json.loads(text)) == ["auc", "folds", "when", "name"]  # order kept


def test_write_json_of_a_pydantic_model(tmp_path):
    target = tmp_path / "split.json"
    params = SplitParams(train_start=dt.date(2018, 5, 1), test_days=3)
    write_json(params, target)
    again = SplitParams.model_validate(read_json(target, made_by="split"))
    assert again == params


def test_write_text(tmp_path):
    target = tmp_path / "board.md"
    write_text("# Leaderboard\n", target)
    assert target.read_text(encoding="utf-8") == "# Leaderboard\n"


def test_write_parquet_round_trip(tmp_path):
    frame = pd.DataFrame(
        {
            "TX_DATETIME": pd.date_range("2018-04-01", periods=5, freq="h"),
            "CUSTOMER_ID": np.arange(5, dtype=np.int64),
            "TX_AMOUNT": [1.5, 2.0, np.nan, 4.25, 0.0],
            "TX_FRAUD": np.array([0, 1, 0, 0, 1], dtype=np.int8),
            "shop": ["web", None, "store", "web", "atm"],
        }
    )
    target = tmp_path / "data" / "features.parquet"
    write_parquet(frame, target)
    again = read_parquet(target, made_by="features")
    pd.testing.assert_frame_equal(again, frame, check_dtype=False)
    assert again["TX_FRAUD"].dtype == np.int8
    assert again["CUSTOMER_ID"].dtype == np.int64
    assert again.index.tolist() == [0, 1, 2, 3, 4]
    assert entries(target.parent) == ["features.parquet"]


def test_write_parquet_drops_the_index(tmp_path):
    frame = pd.DataFrame({"x": [1, 2, 3]}, index=[10, 20, 30])
    write_parquet(frame, tmp_path / "x.parquet")
    assert read_parquet(tmp_path / "x.parquet", made_by="x").index.tolist() == [0, 1, 2]


@pytest.mark.parametrize("reader", [read_parquet, read_json])
def test_missing_inputs_name_the_stage_to_run(tmp_path, reader):
    path = tmp_path / "features.parquet"
    with pytest.raises(
        MissingInputError, match=r"made by the 'features' stage: run `dvc repro features`"
    ):
        reader(path, made_by="features")


# ------------------------------------------------------------------- SIGKILL


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(child: subprocess.Popen[str], expected: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != expected:
        child.kill()
        _, errors = child.communicate()
        pytest.fail(f"child said {line!r}, expected {expected!r}; stderr:\n{errors}")


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def leftovers_are_staging_folders(folder: Path, name: str) -> None:
    """Only staging folders (.<name>.*.tmp) may remain beside the target after SIGKILL."""
    for entry in folder.iterdir():
        if entry.name == name:
            continue
        assert entry.is_dir(), entry
        assert entry.name.startswith(f".{name}.")
        assert entry.name.endswith(".tmp")


@pytest.mark.timeout(60)
def test_sigkill_inside_the_block_leaves_no_target(tmp_path):
    target = tmp_path / "features.parquet"
    child = start_child(
        """
        import sys, time
        from fraud_detection.io.files import atomic_path

        with atomic_path(sys.argv[1]) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"PAR1" + b"\\0" * 5_000_000)  # half a parquet file
                handle.flush()
            print("half written", flush=True)
            time.sleep(60)
        """,
        str(target),
    )
    wait_for_line(child, "half written")
    staged = list(tmp_path.glob(".features.parquet.*.tmp/features.parquet"))
    assert len(staged) == 1  # the partial file exists, but only in the staging folder
    kill(child)

    assert not target.exists()
    assert "features.parquet" not in [p.name for p in tmp_path.iterdir()]
    leftovers_are_staging_folders(tmp_path, target.name)


@pytest.mark.timeout(60)
def test_sigkill_during_rewrites_leaves_a_complete_file(tmp_path):
    """A child rewrites a large parquet file in a loop; killed at any moment, the target
    is always one complete version, never a torn one."""
    target = tmp_path / "dataset.parquet"
    rows = 400_000
    child = start_child(
        """
        import sys
        import numpy as np, pandas as pd
        from fraud_detection.io.files import write_parquet

        rows = int(sys.argv[2])
        rng = np.random.default_rng(0)
        noise = rng.normal(size=(rows, 6))
        version = 0
        while True:
            frame = pd.DataFrame(noise + version, columns=[f"c{i}" for i in range(6)])
            frame["version"] = version
            write_parquet(frame, sys.argv[1])
            print(f"wrote {version}", flush=True)
            version += 1
        """,
        str(target),
        str(rows),
    )
    wait_for_line(child, "wrote 0")
    time.sleep(0.4)  # several rewrites in flight; the kill lands mid-write or between
    kill(child)

    frame = pd.read_parquet(target)
    assert len(frame) == rows
    versions = frame["version"].unique()
    assert len(versions) == 1
    leftovers_are_staging_folders(tmp_path, target.name)


def test_parquet_frame_reads_what_pandas_reads(tmp_path):
    """The thread-free reader (see its docstring) gives pandas' own frame, dtypes included."""
    frame = pd.DataFrame(
        {
            "amount": [1.5, np.nan, 3.0],
            "channel": ["web", None, "shop"],
            "kind": pd.Categorical(["a", "b", "a"]),
            "at": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
            "flag": np.array([1, 0, 1], dtype=np.int8),
        }
    )
    path = tmp_path / "frame.parquet"
    frame.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(parquet_frame(path), pd.read_parquet(path))

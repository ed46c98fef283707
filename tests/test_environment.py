"""The environment `make install` builds from uv.lock is CPU-only: no CUDA libraries."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CUDA = re.compile(r"^(nvidia-|cuda|cupy)|[-_]cu\d+$", re.IGNORECASE)


def test_nothing_from_cuda_is_installed() -> None:
    names = sorted({dist.metadata["Name"] for dist in importlib.metadata.distributions()})
    assert [name for name in names if CUDA.search(name)] == []


@pytest.mark.skipif(sys.platform not in {"linux", "win32"}, reason="xgboost-cpu wheels")
def test_xgboost_is_the_cpu_build() -> None:
    assert importlib.metadata.packages_distributions()["xgboost"] == ["xgboost-cpu"]


def test_the_lock_has_no_cuda_package_for_linux() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    names = [package["name"] for package in lock["package"]]
    assert [name for name in names if CUDA.search(name)] == []
    assert "xgboost-cpu" in names

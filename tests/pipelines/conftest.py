"""Fixtures for the end-to-end tests: a project copy whose pipeline has run once."""

from __future__ import annotations

import pytest

from tests.pipelines.project import TINY_OVERRIDES, Project, make_project, merged, repo_params


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project with tiny params whose pipeline has been run once with `dvc repro`."""
    project = make_project(
        tmp_path_factory.mktemp("project"), merged(repo_params(), TINY_OVERRIDES)
    )
    project.run("dvc", "repro")
    return project

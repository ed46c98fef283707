"""Every relative link and image in the README and docs/ points at something that exists,
and every #anchor at a heading of its page (GitHub's rules for heading anchors); the
generated walkthrough matches its template."""

from __future__ import annotations

import os
import re
import string
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "orchestration" / "airflow" / "README.md",
]
# [text](target) and ![alt](target), without the ones inside code spans or blocks.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
CODE = re.compile(r"`[^`\n]*`")


def links(page: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors: headings lowercased, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.name}: {broken}"


def test_the_checker_sees_links_and_anchors() -> None:
    readme = links(REPO / "README.md")
    assert "docs/monitoring.md" in readme
    assert "interview-walkthrough-the-questions-answered-by-this-projects-own-runs" in anchors(
        REPO / "docs" / "walkthrough.md"
    )


def filled_by(template: str) -> re.Pattern[str]:
    """A pattern that matches the template with any value in each {field}."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(r"[^\n]*?" if "table" not in field else r".*?")
    return re.compile("".join(parts), re.S)


def test_walkthrough_is_generated_from_the_current_template() -> None:
    """docs/walkthrough.md is written by `make docs` from docs/walkthrough.in.md: an edit
    to the template (or to the output by hand) without regenerating shows here."""
    template = (REPO / "docs" / "walkthrough.in.md").read_text(encoding="utf-8")
    generated = (REPO / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    assert filled_by(template).fullmatch(generated), (
        "docs/walkthrough.md is not docs/walkthrough.in.md filled in: run `make docs`"
    )


def test_the_template_check_catches_a_stale_page() -> None:
    pattern = filled_by("AP {ap:.3f} on {rows} rows.\n| a | b |\n{table}\nend")
    assert pattern.fullmatch("AP 0.705 on 58,931 rows.\n| a | b |\n| 1 | 2 |\n| 3 | 4 |\nend")
    assert not pattern.fullmatch("AP 0.705 on 58,931 rows, edited.\n| a | b |\n| 1 |\nend")
    assert not pattern.fullmatch("AP 0.705 on 58,931 rows.\n| a | b |\n| 1 | 2 |\n")


# ------------------------------------------- what the README says the tools also say


def test_the_prerequisites_are_the_preflight_s() -> None:
    from scripts import preflight  # noqa: PLC0415

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert preflight.markdown_table() in readme
    debian = " ".join(["python3", *preflight.packages_for("debian")])
    fedora = " ".join(["python3", *preflight.packages_for("fedora")])
    assert f"sudo apt-get install {debian}   # Debian/Ubuntu" in readme
    assert f"sudo dnf install {fedora} " in readme
    assert f"brew install python@3.12 {' '.join(preflight.packages_for('macos'))} " in readme


def test_the_make_targets_block_is_make_help() -> None:
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    ).stdout
    targets = re.sub(r"\x1b\[[0-9;]*m", "", shown).split("\n", 2)[2].rstrip()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Make targets", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    assert block.rstrip() == targets

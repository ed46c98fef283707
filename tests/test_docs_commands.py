"""Every shell command in the README and docs/ is checked, and runs (tests/docs_commands.py
describes the blocks and their markers).

Fast: every block parses, every marker is known, and every command names real things
(make targets and variables, modules, scripts, DVC subcommands, options of our CLIs).

Slow: the unmarked and `server` blocks run, in the order of the docs, in one throw-away
copy of the project whose pipeline has run with tiny params (tests/pipelines/project.py).
The copy has the Makefile and the lock files, and its .venv is a link to this one (make
finds it up to date and installs nothing). Each block is one user session:

- Every block starts from the project as `make train` left it: the blocks that run
  `dvc exp run` come last. (An experiment's model that does not beat the champion stays
  in the workspace, and the reference is rebuilt from it, while `make serve` serves the
  champion: the monitor would then see the two models' scores differ.)
- Ports are the test's own free ones. The docs' `127.0.0.1:8000` / `localhost:8000` and
  `:5000` / `--port 5000` are rewritten to them; `make serve`, `make mlflow-ui` get them
  from SERVING_PORT / MLFLOW_PORT (the Makefile reads both), and `make replay` from the
  copy's params.yaml (`replay.url`, where the replay's URL is configured).
- A command that serves until Ctrl-C (`make serve`, `make mlflow-ui`, anything ending in
  `&`) starts in the background; the next command runs once it answers, and the block
  ends it with Ctrl-C (SIGINT; SIGTERM for a `&` job, which ignores SIGINT). A `server`
  block without its own `make serve` gets one started first (the docs' "terminal 1").
- A block that replays traffic starts with an empty logs/ (the monitor's window then holds
  that block's replays only, as on a fresh clone); the others find the prediction log as
  the blocks before them left it (docs/serving.md's queries read rows).
- `--start ...` ("the start the replay printed") becomes the start the last replay printed.
- Each command must end with the exit code its comment states (`exit 1`), else 0: the
  code the user's shell gets (make's own is 2 whenever a recipe fails).
- curl reports each answer's HTTP status on stderr (a .curlrc in CURL_HOME): every one
  must be 2xx.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.docs_commands import (
    CLI_OF_MAKE_VARIABLE,
    LONG_RUNNING,
    MLFLOW_PORT,
    REPO,
    SERVICE_PORT,
    START_PLACEHOLDER,
    Block,
    Checker,
    Command,
    DocsCommandError,
    blocks,
    curl_problem,
    pages,
    parse_page,
    split_commands,
    with_ports,
    write_curlrc,
)
from tests.pipelines.project import TINY_OVERRIDES, Project, make_project, merged, repo_params


def _all_blocks() -> list[Block]:
    try:
        return blocks()
    except DocsCommandError:
        return []  # test_every_page_parses names the problem


def _changes_the_pipeline(block: Block) -> bool:
    return any("dvc exp run" in command.text for command in block.commands)


BLOCKS = _all_blocks()
# In the docs' order, except that the blocks running experiments come last (see below).
RUNNABLE = sorted(
    (block for block in BLOCKS if block.kind in {"run", "server"}), key=_changes_the_pipeline
)


# --- fast: parsing and checking ---------------------------------------------------------


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_page_parses(page: Path) -> None:
    parse_page(page, page.relative_to(REPO))


def test_the_parser_sees_the_docs_blocks() -> None:
    names = {block.page for block in BLOCKS}
    assert {"README.md", "docs/monitoring.md", "docs/serving.md"} <= names
    assert "docs/walkthrough.md" not in names  # generated: its source is checked
    kinds = {block.kind for block in BLOCKS}
    assert kinds == {"run", "server", "docker", "skip"}
    texts = [command.text for block in RUNNABLE for command in block.commands]
    assert "dvc repro" in texts
    assert any(text.startswith("curl -s http://127.0.0.1:8000/predict -H") for text in texts)
    assert all(block.reason for block in BLOCKS if block.kind == "skip")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_every_command_names_real_things(block: Block, checker: Checker) -> None:
    problems = [
        f"{block.page}:{command.line}: {problem}"
        for command in block.commands
        for problem in checker.problems(command, block)
    ]
    assert not problems, "\n".join(problems)


def test_what_the_runner_relies_on_is_in_the_makefile(checker: Checker) -> None:
    makefile = (REPO / "Makefile").read_text()
    for target, (variable, _) in LONG_RUNNING.items():
        assert target in checker.targets
        assert variable in makefile, f"make {target} no longer reads {variable}"
    for variable, (_, module) in CLI_OF_MAKE_VARIABLE.items():
        assert re.search(rf"python -m {re.escape(module)} .*\$\({variable}\)", makefile)
    assert "--scenario $(name)" in makefile  # SCENARIO names replay scenarios


# --- fast: the parser and the checker fail when they should ------------------------------


def _page(tmp_path: Path, text: str) -> list[Block]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return parse_page(page)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- docs-check: later -->\n```bash\nmake train\n```\n", "unknown marker"),
        ("<!-- docs-check: skip -->\n```bash\nmake bench\n```\n", "needs its reason"),
        ("<!-- docs-check: skip () -->\n```bash\nmake bench\n```\n", "needs its reason"),
        ("<!-- docs-check: server -->\n\n```bash\nmake serve\n```\n", "right above a fence"),
        ("<!-- docs-check: server\n```bash\nmake serve\n```\n", "malformed marker"),
        ("<!-- docs-check: skip (x) -->\n```python\nprint(1)\n```\n", "above a python block"),
        ("```bash\ncurl -d '{\n```\n", "quote is never closed"),
        ("```bash\nmake train \\\n```\n", "ends with a backslash"),
        ("```bash\nmake train\n", "never closed"),
    ],
)
def test_bad_pages_are_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DocsCommandError, match=message):
        _page(tmp_path, text)


def test_markers_and_their_reasons(tmp_path: Path) -> None:
    found = _page(
        tmp_path,
        "Intro\n\n<!-- docs-check: skip (needs S3 (and credentials)) -->\n```sh\nmake push\n```\n"
        "<!-- docs-check: server -->\n  ```console\n  $ curl -s http://127.0.0.1:8000/health\n"
        '  {"status":"ok"}\n  ```\n```text\n# not a command\n```\n```bash\nmake train\n```\n',
    )
    assert [(block.kind, block.reason, block.line) for block in found] == [
        ("skip", "needs S3 (and credentials)", 4),
        ("server", "", 8),
        ("run", "", 15),
    ]
    assert [command.text for command in found[1].commands] == [
        "curl -s http://127.0.0.1:8000/health"
    ]


def test_commands_are_split_as_bash_reads_them() -> None:
    lines = [
        "# a comment line",
        "make monitor   # DRIFT ... (exit 1)",
        "sqlite3 logs/predictions.db \\",
        "  \"SELECT json_extract(features, '\\$[0]') FROM predictions\"  # first feature",
        "curl -s http://127.0.0.1:8000/predict -d '{",
        '  "note": "# not a comment"}\'',
        '# {"response": 1}',
        "echo a#b; echo 'c' # d",
    ]
    commands = split_commands(lines)
    assert [(command.line, command.expected_exit) for command in commands] == [
        (2, 1),
        (3, 0),
        (5, 0),
        (8, 0),
    ]
    assert commands[0].text == "make monitor"
    assert commands[1].words == [
        "sqlite3",
        "logs/predictions.db",
        "SELECT json_extract(features, '\\$[0]') FROM predictions",
    ]
    assert commands[2].words[-1] == '{\n  "note": "# not a comment"}'
    assert [simple.argv for simple in commands[3].simple_commands()] == [
        ["echo", "a#b"],
        ["echo", "c"],
    ]
    assert Command("make monitor", "NO DRIFT ... exit code 0", 1).expected_exit == 0
    assert Command("mlflow server --port 5000 &", "", 1).background


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("make trian", "no make target 'trian'"),
        ("make replay SCENARIOS=amount_shift", "no variable SCENARIOS"),
        ("make replay SCENARIO=amount_shfit", "no replay scenario 'amount_shfit'"),
        ('make monitor MONITOR_ARGS="--since 1h"', "--since is not an option"),
        ("make docker-run", "needs a container engine"),
        ("docker build -t x .", "needs a container engine"),
        ("python -m monitoring.nope", "no module monitoring.nope"),
        ("python -m monitoring --strat x", "--strat is not an option"),
        (".venv/bin/python benchmarks/nope.py", "no script benchmarks/nope.py"),
        ("dvc exp runn", "dvc rejects it"),
        ("dvc repro --bogus", "dvc rejects it"),
        ("curl -s http://127.0.0.1:8000/health", "mark the block <!-- docs-check: server"),
        ("curl -s http://example.com/", "only local services"),
        ("cat reports/nope.md", "neither in the repository nor a DVC output"),
        ("rm -rf data", "no check for 'rm'"),
        ('eval "$(.venv/bin/python -m stacks env)"', "no module stacks"),
        ('eval "$(.venv/bin/python -m stack --bogus)"', "--bogus is not an option"),
        ("eval `date`", "only eval"),
    ],
)
def test_the_checker_finds_what_is_wrong(checker: Checker, text: str, problem: str) -> None:
    block = Block("page.md", 1, "bash", "run", "", ())
    problems = checker.problems(Command(text, "", 1), block)
    assert any(problem in found for found in problems), problems


def test_the_checker_accepts_what_is_right(checker: Checker) -> None:
    block = Block("page.md", 1, "bash", "server", "", ())
    for text in (
        'make monitor MONITOR_ARGS="--start ..."',
        'make replay SCENARIO="amount_shift customer_mix" REPLAY_ARGS="--batch-size 500"',
        "dvc exp run -S train.cv.n_splits=5",
        "cat reports/evaluate/model_card.md",
        "curl -s http://127.0.0.1:8000/model | head -c 400; echo",
    ):
        assert checker.problems(Command(text, "", 1), block) == [], text


def test_curl_answers_are_checked() -> None:
    two = Command("curl -s http://h/a; curl -s http://h/b", "", 1)
    assert curl_problem(two, "docs-check: HTTP 200\ndocs-check: HTTP 200\n") is None
    assert "503" in str(curl_problem(two, "docs-check: HTTP 200\ndocs-check: HTTP 503\n"))
    assert "2 curl call(s) but 1" in str(curl_problem(two, "docs-check: HTTP 200\n"))
    assert with_ports("curl localhost:8000/x --port 5000", {8000: 1, 5000: 2}) == (
        "curl localhost:1/x --port 2"
    )


# --- slow: the commands run ---------------------------------------------------------------

# Tiny params, with what the docs' commands name: the model `xgboost` (dvc exp run -S
# 'train.models.xgboost.grid...') and the registry name `make serve` loads by default. The
# replay sends 2,000 rows (the monitor needs 500). The tiny world's weeks differ more than
# the handbook's: its seeded no-drift week moves one feature by 0.15 (Wasserstein, as
# measured), the amount shift moves the amounts by 0.5 or more and the score by 0.57; the
# gate's limits are set between the two so the docs' verdicts hold.
DOCS_OVERRIDES: dict[str, Any] = merged(
    TINY_OVERRIDES,
    {
        "train": {
            "models": {
                "dummy": {"kind": "dummy", "strategies": ["none"]},
                "xgboost": {
                    "kind": "xgboost",
                    "params": {"n_estimators": 10},
                    "grid": {"max_depth": [3]},
                    "strategies": ["class_weight"],
                },
            }
        },
        "evaluate": {"registered_model_name": repo_params()["evaluate"]["registered_model_name"]},
        "replay": {"rows": 2000},
        "monitor": {"drift_threshold": 0.25, "gate": {"max_score_drift": 0.2}},
    },
)
COMMAND_TIMEOUT = 300
READY_TIMEOUT = 120
REPLAY_START = re.compile(r'MONITOR_ARGS="--start (\S+)"')


@pytest.fixture(scope="module")
def docs_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("docs-project")
    project = make_project(root, merged(repo_params(), DOCS_OVERRIDES))
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, root / name)  # copy2: the mtimes make compares
    shutil.copytree(REPO / "docs/examples", root / "docs/examples")
    for name in (".venv", ".tools"):
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    with (root / ".git/info/exclude").open("a") as exclude:
        exclude.write("/.venv\n/.tools\n")  # .gitignore's /.venv/ matches no symlink
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "what the docs' commands use")
    makefile = (REPO / "Makefile").read_text()
    defaults = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*\?=", makefile, re.M))
    project.env = {
        name: value
        for name, value in project.env.items()
        if name not in defaults and not name.startswith("SERVING_")
    }
    stale = project.run("make", "-q", ".venv/.installed", check=False)
    if stale.returncode != 0:
        pytest.fail(
            ".venv is older than pyproject.toml or uv.lock: run `make install` first (the "
            "copy links to this .venv and must not sync it)"
        )
    project.run("dvc", "repro")
    return project


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.name)
def test_the_docs_commands_run(block: Block, docs_project: Project, tmp_path: Path) -> None:
    with Session(docs_project, block, tmp_path) as session:
        for command in block.commands:
            session.run(command)


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _group_alive(group: int) -> bool:
    """Some process of the group is alive (zombies, which nobody may reap here, aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                return True
    return False


class Background:
    """A command that serves until stopped, in its own process group."""

    def __init__(
        self, command: Command, text: str, project: Project, env: dict[str, str], log: Path
    ) -> None:
        self.text, self.log = text, log
        # Ctrl-C, as in the terminal; but a `cmd &` job of a script ignores SIGINT (bash).
        self.first_signal = signal.SIGTERM if command.background else signal.SIGINT
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                ["bash", "-c", text],
                cwd=project.root,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_until_it_answers(self, url: str, ok: range) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        seen_gone = False
        while time.monotonic() < deadline:
            self.process.poll()
            # Twice in a row: a listing of /proc can miss a process forked meanwhile (a
            # `cmd &` line's shell forks, then exits at once).
            if not _group_alive(self.process.pid):
                if seen_gone:
                    pytest.fail(f"`{self.text}` exited before {url} answered:\n{self.output()}")
                seen_gone = True
            else:
                seen_gone = False
            with suppress(httpx.TransportError):
                if httpx.get(url, timeout=2).status_code in ok:
                    return
            time.sleep(0.3)
        pytest.fail(f"{url} did not answer within {READY_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> None:
        for sent in (self.first_signal, signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, sent)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                self.process.poll()
                if not _group_alive(self.process.pid):
                    return
                time.sleep(0.2)


class Session:
    """One block's run (see the module's docstring)."""

    def __init__(self, project: Project, block: Block, scratch: Path) -> None:
        self.project, self.block, self.scratch = project, block, scratch
        service, mlflow, monitor_ui = _free_ports(3)
        self.ports = {SERVICE_PORT: service, MLFLOW_PORT: mlflow}
        self.env = project.env | {
            "SERVING_PORT": str(service),
            "MLFLOW_PORT": str(mlflow),
            "MONITOR_UI_PORT": str(monitor_ui),
            "CURL_HOME": str(write_curlrc(scratch / "curl")),
            # MLflow's job runner (a dozen worker processes nothing here uses) makes its
            # UI and server take 10 s longer to start and 20 s to stop.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        self.servers: list[Background] = []
        self.replay_start: str | None = None

    def __enter__(self) -> Session:
        params_path = self.project.path("params.yaml")
        params = yaml.safe_load(params_path.read_text())
        params["replay"]["url"] = f"http://127.0.0.1:{self.ports[SERVICE_PORT]}"
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        if any(command.make_target() == "replay" for command in self.block.commands):
            shutil.rmtree(self.project.path("logs"), ignore_errors=True)
        if self.block.kind == "server" and not any(
            command.make_target() == "serve" for command in self.block.commands
        ):
            self.run(Command("make serve", "terminal 1, started by the test", self.block.line))
        return self

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.servers):
            server.stop()

    def run(self, command: Command) -> None:
        text = with_ports(command.text, self.ports)
        if START_PLACEHOLDER in text:
            assert self.replay_start, f"{command.text}: no replay printed its start before"
            text = text.replace(START_PLACEHOLDER, f"--start {self.replay_start}")
        where = f"{self.block.page}:{command.line}"
        started = time.perf_counter()
        target = command.make_target()
        if target in LONG_RUNNING or command.background:
            log = self.scratch / f"{len(self.servers)}.log"
            server = Background(command, text, self.project, self.env, log)
            self.servers.append(server)
            if target in LONG_RUNNING:
                variable, path = LONG_RUNNING[target]
                server.wait_until_it_answers(
                    f"http://127.0.0.1:{self.env[variable]}{path}", range(200, 201)
                )
            elif port := re.search(r"--port[ =](\d+)", text):
                server.wait_until_it_answers(f"http://127.0.0.1:{port[1]}/", range(200, 500))
            print(f"{where}: {text!r} serving after {time.perf_counter() - started:.1f} s")
            return
        done = subprocess.run(
            ["bash", "-c", text],
            cwd=self.project.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        print(f"{where}: {text!r} exit {done.returncode} in {time.perf_counter() - started:.1f} s")
        code = done.returncode  # what the user sees: make exits 2 whenever a recipe fails
        said = f"\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}" + "".join(
            f"\n--- `{s.text}`\n{s.output()[-1500:]}" for s in self.servers
        )
        assert code == command.expected_exit, (
            f"{where}: `{text}` exited {code}, the docs say {command.expected_exit}{said}"
        )
        if any(simple.program == "curl" for simple in command.simple_commands()):
            problem = curl_problem(command, done.stderr)
            assert problem is None, f"{where}: `{text}`: {problem}{said}"
        if start := REPLAY_START.search(done.stdout):
            self.replay_start = start[1]

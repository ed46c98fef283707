"""The shell commands of the README and docs/: found, split into commands and checked.

Every fenced ``bash``/``sh``/``shell``/``console`` block of README.md and docs/*.md is run
by tests/test_docs_commands.py (in a throw-away copy of the project) unless a marker, an
HTML comment on the line right above its fence, says otherwise:

    <!-- docs-check: server -->         needs the running service: the test starts it
                                        (`make serve`) unless the block does, and runs
                                        the block against it; `make test-image` also sends
                                        the block's curl commands to the image
    <!-- docs-check: docker -->         needs a container engine: `make test-image`
                                        (tests/image/check_image.py) runs the block with
                                        podman
    <!-- docs-check: skip (reason) -->  not run; the reason (required) says why

A command ends with exit code 0 unless its own comment says otherwise with `exit N` or
`exit code N` (e.g. `make monitor ...  # DRIFT ... (exit 1)`). Marked or not, every
command is also checked without being run (:class:`Checker`): make targets and
variables, Python modules and scripts and the options given to the project's own CLIs,
DVC subcommands and options, files given to cat and curl.

Pages generated from a ``.in.md`` source (docs/walkthrough.md) are left to their source.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LANGUAGES = frozenset({"bash", "sh", "shell", "console"})
MARKED_KINDS = ("server", "docker", "skip")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-check:(?P<body>.*?)-->\s*$")
MARKER_BODY = re.compile(r"^(?P<kind>[\w-]+)\s*(?:\((?P<reason>.*)\))?$")
EXIT = re.compile(r"\bexit(?: code)? (\d+)\b")
OPERATORS = frozenset({"|", "||", "&&", ";", "&"})
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
# The docs' own placeholder: "the start the replay printed" (the test substitutes it).
START_PLACEHOLDER = "--start ..."
SAMPLE_START = "--start 2026-01-01T00:00:00Z"
# The service's and MLflow's default ports, as the docs write them.
SERVICE_PORT, MLFLOW_PORT = 8000, 5000
PORT_IN_TEXT = re.compile(r"(?P<prefix>(?:127\.0\.0\.1|localhost):|--port[ =])(?P<port>\d+)\b")
# make targets that serve until Ctrl-C: the port variable the Makefile reads and the path
# that answers 200 once the server is up.
LONG_RUNNING: dict[str, tuple[str, str]] = {
    "serve": ("SERVING_PORT", "/ready"),
    "mlflow-ui": ("MLFLOW_PORT", "/health"),
    "monitor-ui": ("MONITOR_UI_PORT", "/"),
}
# make targets that need a container engine, and tools with nothing of ours to check.
ENGINE_TARGETS = frozenset({"docker-build", "docker-run", "test-image", "sbom"})
# The system package managers' lines are checked against the preflight (tests/test_docs.py).
UNCHECKED_TOOLS = frozenset(
    {"echo", "head", "sqlite3", "uv", "sudo", "xcode-select", "brew", "git"}
)
# make variables whose value is passed to one of our CLIs (see the Makefile's recipes).
CLI_OF_MAKE_VARIABLE = {
    "REPLAY_ARGS": ("-m", "monitoring.replay"),
    "MONITOR_ARGS": ("-m", "monitoring"),
}
# curl reports each answer's status on stderr through this .curlrc (CURL_HOME): the docs'
# `curl -s ...` would otherwise exit 0 on a 404 or a 503.
CURL_STATUS = "docs-check: HTTP "
CURLRC = f'write-out = "%{{stderr}}{CURL_STATUS}%{{http_code}}\\n"\n'


class DocsCommandError(ValueError):
    """A page's shell blocks cannot be read; the message names the page and the line."""


@dataclass(frozen=True)
class Simple:
    """One simple command of a command line: its environment assignments and its words."""

    env: dict[str, str]
    argv: list[str]

    @property
    def program(self) -> str:
        return self.argv[0].removeprefix(".venv/bin/") if self.argv else ""


@dataclass(frozen=True)
class Command:
    text: str  # as written without its comment; may span lines (quotes, backslashes)
    comment: str
    line: int

    @property
    def expected_exit(self) -> int:
        match = EXIT.search(self.comment)
        return int(match.group(1)) if match else 0

    @property
    def words(self) -> list[str]:
        lexer = shlex.shlex(self.text.replace("\\\n", " "), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = ""  # comments are gone already; a # left is part of a word
        return list(lexer)

    @property
    def background(self) -> bool:
        """Ends with `&`: it keeps running after the shell line returns."""
        return self.words[-1:] == ["&"]

    def simple_commands(self) -> list[Simple]:
        groups: list[list[str]] = [[]]
        for word in self.words:
            if word in OPERATORS:
                groups.append([])
            else:
                groups[-1].append(word)
        simple = []
        for words in filter(None, groups):
            env = {}
            while words and ASSIGNMENT.match(words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            simple.append(Simple(env, words))
        return simple

    def make_target(self) -> str | None:
        """The target of a line that is just `make <target> [VAR=value ...]`."""
        simple = self.simple_commands()
        if len(simple) != 1 or simple[0].program != "make":
            return None
        targets = [word for word in simple[0].argv[1:] if "=" not in word]
        return targets[0] if len(targets) == 1 else None


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository, e.g. docs/monitoring.md
    line: int  # the opening fence's line (1-based)
    language: str
    kind: str  # run, server, docker or skip
    reason: str
    commands: tuple[Command, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def pages(root: Path = REPO) -> list[Path]:
    """README.md and docs/*.md, without pages generated from a .in.md source."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [page for page in found if not page.with_suffix(".in.md").exists()]


def blocks(root: Path = REPO) -> list[Block]:
    return [block for page in pages(root) for block in parse_page(page, page.relative_to(root))]


def parse_page(path: Path, name: str | Path | None = None) -> list[Block]:
    """The page's shell blocks; a malformed marker or block raises DocsCommandError."""
    label = Path(name or path.name).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        where = f"{label}:{index + 1}"
        fence = FENCE.match(line)
        if fence is None:
            if re.match(r"^\s*<!--\s*docs-check", line):
                if not MARKER.match(line):
                    raise DocsCommandError(f"{where}: malformed marker {line.strip()!r}")
                if index + 1 == len(lines) or not FENCE.match(lines[index + 1]):
                    raise DocsCommandError(
                        f"{where}: a docs-check marker must be the line right above a fence"
                    )
            index += 1
            continue
        close = _closing_fence(lines, index, fence, where)
        language = (fence["info"].split() or [""])[0].lower()
        marker = MARKER.match(lines[index - 1]) if index else None
        if language in LANGUAGES:
            kind, reason = _marker(marker["body"], where) if marker else ("run", "")
            indent = len(fence["indent"])
            body = [_dedent(text, indent) for text in lines[index + 1 : close]]
            commands = split_commands(
                body, first_line=index + 2, page=label, console=language == "console"
            )
            found.append(Block(label, index + 1, language, kind, reason, tuple(commands)))
        elif marker:
            raise DocsCommandError(
                f"{where}: docs-check marker above a {language or 'plain'} block; only "
                f"{', '.join(sorted(LANGUAGES))} blocks run"
            )
        index = close + 1
    return found


def _closing_fence(lines: list[str], start: int, fence: re.Match[str], where: str) -> int:
    mark = fence["fence"]
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped.startswith(mark[0] * len(mark)) and not stripped.strip(mark[0]):
            return index
    raise DocsCommandError(f"{where}: the fenced block is never closed")


def _dedent(text: str, indent: int) -> str:
    return text[min(indent, len(text) - len(text.lstrip(" "))) :]


def _marker(body: str, where: str) -> tuple[str, str]:
    match = MARKER_BODY.match(body.strip())
    if match is None or match["kind"] not in MARKED_KINDS:
        raise DocsCommandError(
            f"{where}: unknown marker {body.strip()!r}; use one of: docs-check: server, "
            "docs-check: docker, docs-check: skip (reason)"
        )
    reason = (match["reason"] or "").strip()
    if match["kind"] == "skip" and not reason:
        raise DocsCommandError(
            f"{where}: a skipped block needs its reason: <!-- docs-check: skip (why) -->"
        )
    return match["kind"], reason


def split_commands(
    lines: list[str], first_line: int = 1, page: str = "<block>", console: bool = False
) -> list[Command]:
    """Command lines as bash reads them: `#` comments dropped (not inside quotes), lines
    joined by a trailing backslash or an open quote; comment-only lines dropped. In a
    console block only `$ ` lines (and their continuations) are commands."""
    commands: list[Command] = []
    text, comments, quote, start = "", [], "", 0
    for offset, raw in enumerate(lines):
        line = raw
        if not text and not quote:
            if console and not line.startswith("$ "):
                continue
            line = line.removeprefix("$ ") if console else line
            start = first_line + offset
        scanned, quote, comment, continued = _scan(line, quote)
        text += scanned
        comments += [comment] if comment is not None else []
        if quote or continued:
            text += "\n"
            continue
        if text.strip():
            commands.append(Command(text.strip(), " ".join(comments), start))
        text, comments = "", []
    if quote or text:
        what = "a quote is never closed" if quote else "the last line ends with a backslash"
        raise DocsCommandError(f"{page}:{start}: {what}")
    return commands


def _scan(line: str, quote: str) -> tuple[str, str, str | None, bool]:
    """One line: its text without the comment, the quote still open at its end, the
    comment, and whether a backslash ends it (the next line continues it)."""
    kept: list[str] = []
    continued = False
    position = 0
    while position < len(line):
        char = line[position]
        if char == "\\" and quote != "'":
            if position + 1 == len(line):
                continued = True
            else:  # the next character is taken as it is
                kept.append(char)
                position += 1
                char = line[position]
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or line[position - 1] in " \t;|&("):
            return "".join(kept), quote, line[position + 1 :].strip(), False
        kept.append(char)
        position += 1
    return "".join(kept), quote, None, continued


def with_ports(text: str, ports: Mapping[int, int]) -> str:
    """`127.0.0.1:8000`, `localhost:8000` and `--port 8000` moved to the chosen ports."""

    def swap(match: re.Match[str]) -> str:
        port = int(match["port"])
        return f"{match['prefix']}{ports.get(port, port)}"

    return PORT_IN_TEXT.sub(swap, text)


def write_curlrc(folder: Path) -> Path:
    """A CURL_HOME whose .curlrc makes curl report each answer's status on stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".curlrc").write_text(CURLRC)
    return folder


def curl_problem(command: Command, stderr: str) -> str | None:
    """What is wrong with the answers the command's curl calls got (None: all 2xx)."""
    calls = sum(simple.program == "curl" for simple in command.simple_commands())
    statuses = [int(code) for code in re.findall(rf"{CURL_STATUS}(\d+)", stderr)]
    if len(statuses) != calls:
        return f"{calls} curl call(s) but {len(statuses)} HTTP answer(s): {statuses}"
    failed = [status for status in statuses if not 200 <= status < 300]
    return f"HTTP status {failed} (expected 2xx)" if failed else None


def needs_service(command: Command) -> bool:
    """Talks to the service on its port, replays traffic to it or reads its log."""
    for simple in command.simple_commands():
        urls = [urlsplit(word) for word in simple.argv if word.startswith("http")]
        if simple.program == "curl" and any(url.port == SERVICE_PORT for url in urls):
            return True
        if simple.program == "make" and "replay" in simple.argv[1:]:
            return True
        if simple.program == "sqlite3" and any(a.startswith("logs/") for a in simple.argv):
            return True
    return False


class Checker:
    """Checks commands without running them; each problem is a sentence saying what."""

    def __init__(self, root: Path = REPO) -> None:
        self.root = root
        makefile = (root / "Makefile").read_text(encoding="utf-8")
        self.targets = set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", makefile, re.M))
        self.variables = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:+]?=", makefile, re.M))
        params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
        self.scenarios = set(params["replay"]["scenarios"])
        self._helps: dict[tuple[str, ...], str] = {}

    def problems(self, command: Command, block: Block) -> list[str]:
        found = []
        if needs_service(command) and block.kind not in {"server", "docker", "skip"}:
            found.append(
                "needs the running service (or its log): mark the block <!-- docs-check: server -->"
            )
        for simple in command.simple_commands():
            found += [f"`{' '.join(simple.argv)}`: {p}" for p in self._simple(simple, block)]
        return found

    def _simple(self, simple: Simple, block: Block) -> list[str]:
        argv = simple.argv
        if argv and argv[0].startswith(".venv/bin/") and not (self.root / argv[0]).exists():
            return [f"{argv[0]} does not exist (after `make install`)"]
        checks: dict[str, Callable[[list[str]], list[str]]] = {
            "make": lambda words: self._make(words, block),
            "python": self._python,
            "python3": self._python,
            "dvc": self._dvc,
            "mlflow": lambda words: self._options(
                (str(VENV_BIN / "mlflow"), *words[:1]), words[1:]
            ),
            "curl": self._curl,
            "cat": self._cat,
            "docker": lambda words: self._docker(words, block),
            "eval": self._eval,
        }
        if not argv or simple.program in UNCHECKED_TOOLS:
            return []
        if simple.program not in checks:
            return [f"no check for {simple.program!r}: teach tests/docs_commands.py about it"]
        return checks[simple.program](argv[1:])

    def _eval(self, words: list[str]) -> list[str]:
        """``eval "$(.venv/bin/python -m MODULE ...)"``: the command inside is checked."""
        inner = re.fullmatch(r"\$\((?P<command>.+)\)", " ".join(words).strip())
        if inner is None:
            return ['only eval "$(COMMAND)" is checked']
        argv = shlex.split(inner["command"])
        if not argv or Path(argv[0]).name not in {"python", "python3"}:
            return ['only eval "$(python -m MODULE)" is checked']
        if argv[0].startswith(".venv/bin/") and not (self.root / argv[0]).exists():
            return [f"{argv[0]} does not exist (after `make install`)"]
        return self._python(argv[1:])

    def _docker(self, words: list[str], block: Block) -> list[str]:
        if block.kind not in {"docker", "skip"}:
            return ["needs a container engine: mark the block <!-- docs-check: docker -->"]
        return [] if words[:1] in (["build"], ["run"]) else ["only build and run are run"]

    def _make(self, words: list[str], block: Block) -> list[str]:
        found = []
        for word in words:
            name, assigns, value = word.partition("=")
            if word.startswith("-"):
                found.append(f"make option {word} is not checked")
            elif not assigns:
                if name not in self.targets:
                    found.append(f"no make target {name!r} in the Makefile")
                elif name in ENGINE_TARGETS and block.kind not in {"docker", "skip"}:
                    found.append(f"make {name} needs a container engine: mark the block docker")
            elif name not in self.variables:
                found.append(f"the Makefile has no variable {name}")
            elif name in CLI_OF_MAKE_VARIABLE:
                args = shlex.split(value.replace(START_PLACEHOLDER, SAMPLE_START))
                found += self._options((sys.executable, *CLI_OF_MAKE_VARIABLE[name]), args)
            elif name == "SCENARIO":
                found += [
                    f"no replay scenario {scenario!r} in params.yaml"
                    for scenario in value.split()
                    if scenario not in self.scenarios
                ]
        return found

    def _python(self, words: list[str]) -> list[str]:
        if words[:1] == ["-m"] and len(words) > 1:
            module, args = words[1], words[2:]
            ours = any(
                (self.root / module.replace(".", "/")).with_suffix(suffix).exists()
                for suffix in (".py", "")
            )
            if not ours and not _importable(module):
                return [f"no module {module}"]
            return self._options((sys.executable, "-m", module), args) if ours else []
        if words and words[0].endswith(".py"):
            if not (self.root / words[0]).is_file():
                return [f"no script {words[0]}"]
            return self._options((sys.executable, words[0]), words[1:])
        return ["only `python -m MODULE` and `python SCRIPT.py` are checked"]

    def _options(self, invocation: tuple[str, ...], args: list[str]) -> list[str]:
        """Every --option (or -o) given appears in the program's --help."""
        options = [arg.split("=", 1)[0] for arg in args if re.match(r"^--?[A-Za-z]", arg)]
        if not options:
            return []
        if invocation not in self._helps:
            done = subprocess.run(
                [*invocation, "--help"],
                cwd=self.root,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            self._helps[invocation] = done.stdout if done.returncode == 0 else ""
        name = " ".join([Path(invocation[0]).name, *invocation[1:]])
        help_text = self._helps[invocation]
        if not help_text:
            return [f"`{name} --help` failed"]
        return [
            f"{option} is not an option of `{name}` (see its --help)"
            for option in options
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text)
        ]

    def _dvc(self, words: list[str]) -> list[str]:
        from dvc.cli.parser import get_main_parser  # noqa: PLC0415  (slow import, dvc only)

        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
                get_main_parser().parse_args(words)
        except (SystemExit, Exception):
            lines = [line for line in said.getvalue().splitlines() if line.strip()]
            return [f"dvc rejects it: {lines[-1] if lines else 'parser error'}"]
        return []

    def _curl(self, words: list[str]) -> list[str]:
        found = []
        for previous, word in zip(["", *words], words, strict=False):
            if word.startswith(("http://", "https://")):
                url = urlsplit(word)
                if url.hostname not in {"127.0.0.1", "localhost"}:
                    found.append(f"{word}: only local services are called")
            elif (
                previous in {"-d", "--data", "--data-binary"}
                and word.startswith("@")
                and not (self.root / word[1:]).is_file()
            ):
                found.append(f"no file {word[1:]}")
        return found

    def _cat(self, words: list[str]) -> list[str]:
        outputs = _dvc_outputs(self.root)
        return [
            f"{word} is neither in the repository nor a DVC output"
            for word in words
            if not word.startswith("-")
            and not (self.root / word).exists()
            and not any(word == out or word.startswith(f"{out}/") for out in outputs)
        ]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _dvc_outputs(root: Path) -> set[str]:
    pipeline: dict[str, Any] = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    found = set()
    for stage in pipeline.get("stages", {}).values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                found |= set(entry) if isinstance(entry, dict) else {entry}
    return found

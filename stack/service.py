"""What `python -m stack` needs to know of each server: how to start, check and stop it."""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from stack.settings import Secrets, StackSettings, variable


class NotReady(Exception):  # noqa: N818  (a state, not a failure: the caller waits)
    """The server does not answer yet (it may still be starting)."""


class Service(ABC):
    """One server of the stack. Health checks raise :class:`NotReady` while waiting makes
    sense and :class:`stack.processes.StackError` when it does not (wrong credentials)."""

    name: ClassVar[str]
    # The setting that moves the service's main port, for messages.
    port_field: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    # Signal the whole process group (a server that runs its workers as children and
    # does not pass the signal on) or the leader alone (one that stops its own children).
    signal_group: ClassVar[bool] = True

    def __init__(self, settings: StackSettings, secrets: Secrets) -> None:
        self.settings = settings
        self.secrets = secrets

    @property
    def port(self) -> int:
        port: int = getattr(self.settings, self.port_field)
        return port

    @property
    def folder(self) -> Path:
        """The service's data folder inside the stack folder."""
        return self.settings.dir / self.name

    @property
    def log(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    def ports(self) -> list[tuple[int, str]]:
        """Every port it binds, with the setting that moves it."""
        return [(self.port, variable(self.port_field))]

    def check_installed(self) -> None:  # noqa: B027  (a hook, like prepare)
        """Raise StackError (with the install line) when the server's program is missing:
        `up` asks every service before it starts any."""

    def prepare(self) -> None:  # noqa: B027  (a hook: most services need nothing)
        """Create what the first start needs (folders, config files, initdb)."""

    @abstractmethod
    def command(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> None:
        """Answers well enough for :meth:`after_start` to run."""
        self.health()

    @abstractmethod
    def health(self) -> None: ...

    def after_start(self) -> None:  # noqa: B027  (a hook, like prepare)
        """One-time setup on the running server (roles, databases, buckets)."""

    @abstractmethod
    def version(self) -> str: ...

    @classmethod  # noqa: B027  (a hook, like prepare)
    def after_stop(cls, settings: StackSettings) -> None:
        """Clean up what the stopped server leaves outside its folder."""

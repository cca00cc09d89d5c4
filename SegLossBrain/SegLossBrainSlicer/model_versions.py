"""Model versions (shipped and fine-tuned) and the store's actions: list, activate, revert to shipped, delete.

Each action is one ``seglossbrain models --progress-json ACTION`` child process (activate loads the model,
hence torch, which never enters the Slicer process). A :class:`VersionsCall` is polled like the other jobs,
so the panel stays responsive; :meth:`VersionsCall.run_blocking` serves scripts and tests. Needs no Qt.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from . import cli_protocol
from .i18n import _
from .process_runner import ChildProcess

ACTIONS = ("list", "activate", "revert", "delete")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    source: str  # "shipped" or "user"
    active: bool
    path: str = ""
    loss: str | None = None
    steps: int | None = None
    base: str | None = None
    created: str | None = None
    dice_before: float | None = None
    dice_after: float | None = None

    @property
    def key(self) -> str:
        """The key the Segment panel's model selector uses for this version (see model_choices)."""
        return f"{self.source}:{self.name}"

    @property
    def can_delete(self) -> bool:
        return self.source == "user" and not self.active

    @classmethod
    def from_summary(cls, data: dict) -> "ModelVersion":
        def number(key, kind):
            try:
                return None if data.get(key) is None else kind(data[key])
            except (TypeError, ValueError):
                return None

        return cls(str(data.get("name", "?")), str(data.get("source", "user")), bool(data.get("active")),
                   str(data.get("path") or ""), data.get("loss"), number("steps", int), data.get("base"),
                   data.get("created"), number("dice_before", float), number("dice_after", float))

    @property
    def worse_than_base(self) -> bool:
        """Its own validation scored it below its base: the store refuses to activate it without ``--force``
        (``models.store.worse_than_base``, the same rule on the same numbers)."""
        return self.dice_before is not None and self.dice_after is not None and self.dice_after < self.dice_before

    def label(self) -> str:
        source = _("shipped") if self.source == "shipped" else _("fine-tuned")
        parts = [source]
        if self.loss:
            parts.append(_("loss {loss}").format(loss=self.loss))
        if self.base:
            parts.append(_("from {base}").format(base=self.base))
        if self.dice_before is not None and self.dice_after is not None:
            parts.append(_("Dice {before:.3f} -> {after:.3f}").format(before=self.dice_before, after=self.dice_after))
        text = f"{self.name} ({', '.join(parts)})"
        return _("{text}  [active]").format(text=text) if self.active else text


def active_version(versions: list[ModelVersion]) -> ModelVersion | None:
    return next((v for v in versions if v.active), None)


def models_arguments(action: str, name: str | None = None, force: bool = False) -> list[str]:
    """``force``: activate a version that scored below its base (the user confirmed it)."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if action in ("activate", "delete") and not name:
        raise ValueError(f"'{action}' needs a version name")
    # --progress-json belongs to 'models' itself: the CLI refuses it after the action.
    return ["models", "--progress-json", action] + ([name] if action in ("activate", "delete") else []) \
        + (["--force"] if force and action == "activate" else [])


class VersionsCall:
    """One ``models`` action in a child process. After :meth:`poll` says done: ``ok``, ``message`` (for the
    status line), ``error`` (for the user) and, for ``list``, ``versions``."""

    def __init__(self, action: str, name: str | None = None, command_prefix=None, env=None, force: bool = False):
        self.action, self.name = action, name
        self.argv = (list(command_prefix) if command_prefix else cli_protocol.engine_command()) + \
            models_arguments(action, name, force)
        self.env = env if env is not None else cli_protocol.engine_environment()
        self.versions: list[ModelVersion] = []
        self.message: str | None = None
        self.error: str | None = None
        self.done = False
        self._result: dict | None = None
        self._error_event: str | None = None
        self._tail: deque = deque(maxlen=10)
        self._child: ChildProcess | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    def start(self) -> "VersionsCall":
        self._child = ChildProcess(self.argv, env=self.env)
        try:
            self._child.start()
        except OSError as error:
            self._finish(error=_("Could not start the engine ({command}): {error}").format(
                command=self.argv[0], error=error))
        return self

    def poll(self) -> bool:
        if self.done or self._child is None:
            return self.done
        for stream, line in self._child.poll():
            event = cli_protocol.parse_line(line) if stream == "stdout" else None
            if event is not None and event.kind == "result":
                self._result = event.data
            elif event is not None and event.kind == "error":
                self._error_event = event.message
            elif line.strip():
                self._tail.append(line)
        if self._child.finished:
            self._conclude(self._child.returncode)
        return self.done

    def _conclude(self, code) -> None:
        if code == 0 and self._result is not None:
            if self.action == "list":
                self.versions = [ModelVersion.from_summary(d) for d in self._result.get("models") or []
                                 if isinstance(d, dict)]
            self._finish(message=self._result.get("message"))
        elif self._error_event:
            self._finish(error=self._error_event)
        else:
            tail = "\n".join(self._tail) or _("(it printed nothing)")
            self._finish(error=_("The model store command '{action}' failed (exit code {code}):\n{tail}").format(
                action=self.action, code=code, tail=tail))

    def _finish(self, message: str | None = None, error: str | None = None) -> None:
        self.message, self.error, self.done = message, error, True

    def cancel(self) -> None:
        if self._child is not None:
            self._child.cancel(force=True)

    def run_blocking(self, timeout: float = 120.0) -> "VersionsCall":
        if self._child is None and not self.done:
            self.start()
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"'models {self.action}' did not finish in time")
            time.sleep(0.02)
        return self


def list_versions(command_prefix=None, env=None, timeout: float = 120.0) -> list[ModelVersion]:
    """Blocking listing for scripts: raises RuntimeError with the engine's message on failure."""
    call = VersionsCall("list", command_prefix=command_prefix, env=env).run_blocking(timeout)
    if call.error:
        raise RuntimeError(call.error)
    return call.versions

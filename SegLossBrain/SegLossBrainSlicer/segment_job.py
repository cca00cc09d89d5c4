"""One ``seglossbrain segment`` run in a child process, seen as a small state machine.

It knows nothing of MRML: file paths in, a result dictionary or a user-readable error out. When the GPU runs
out of memory it runs the same command again on the CPU once, and says so in the log.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import cli_protocol
from .cli_protocol import SegmentOptions
from .i18n import _
from .process_runner import ChildProcess

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

# How the engine's refusal of an input without a brain begins (the panel then offers to segment anyway).
NO_BRAIN = "no brain found"
# How many of the child's last output lines a crash message quotes.
CRASH_LOG_LINES = 15


@dataclass
class JobUpdate:
    """What changed since the previous poll: for the progress bar, the log and the status line."""

    fraction: float | None = None
    status: str | None = None
    log_lines: list[str] = field(default_factory=list)
    done: bool = False


class SegmentJob:
    def __init__(
        self,
        input_path,
        output_path,
        options: SegmentOptions,
        confidence_path=None,
        command_prefix: list[str] | None = None,
        env: dict | None = None,
    ):
        self.input_path = Path(input_path)
        self.output_path = Path(output_path)
        self.confidence_path = Path(confidence_path) if confidence_path else None
        self.options = options
        self.command_prefix = list(command_prefix) if command_prefix else cli_protocol.engine_command()
        self.env = env if env is not None else cli_protocol.engine_environment()
        self.state = RUNNING
        self.result: dict | None = None
        self.error: str | None = None
        self.fell_back_to_cpu = False
        self.log: list[str] = []
        self._tail: deque = deque(maxlen=CRASH_LOG_LINES)
        self._child: ChildProcess | None = None
        self._error_event: str | None = None

    # -- control ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._launch(self.options)

    def _launch(self, options: SegmentOptions) -> None:
        self.options = options
        self.result, self._error_event = None, None
        argv = self.command_prefix + cli_protocol.segment_arguments(
            self.input_path, self.output_path, options, self.confidence_path
        )
        self._child = ChildProcess(argv, env=self.env)
        try:
            self._child.start()
        except OSError as error:
            self._fail(_("Could not start the segmentation process ({command}): {error}").format(
                command=argv[0], error=error))

    def cancel(self, force: bool = False) -> None:
        if self.state == RUNNING:
            self.state = CANCELLED
        if self._child is not None and self._child.running:
            self._child.cancel(force)

    @property
    def child_running(self) -> bool:
        return self._child is not None and self._child.running

    # -- progress -----------------------------------------------------------------------------------------
    def poll(self) -> JobUpdate:
        update = JobUpdate()
        if self._child is None or not self._child.started:
            update.done = self.state != RUNNING
            return update
        for stream, line in self._child.poll():
            self._take_line(stream, line, update)
        if self.state == CANCELLED:
            update.done = self._child.finished or not self._child.running
            return update
        if self.state == RUNNING and self._child.finished:
            self._conclude(update)
        update.done = self.state != RUNNING
        return update

    def _take_line(self, stream: str, line: str, update: JobUpdate) -> None:
        if stream == "stderr":
            self._remember(line, update)
            return
        event = cli_protocol.parse_line(line)
        if event.kind == "progress":
            update.fraction = event.fraction
            if event.message:
                update.status = event.message
        elif event.kind == "result":
            self.result = event.data
        elif event.kind == "error":
            self._error_event = event.message
            self._remember(_("Error: {message}").format(message=event.message), update)
        elif event.message or event.kind == "text":
            self._remember(event.message, update)

    def _remember(self, line: str, update: JobUpdate) -> None:
        self.log.append(line)
        self._tail.append(line)
        update.log_lines.append(line)

    def _conclude(self, update: JobUpdate) -> None:
        code = self._child.returncode
        if code == 0 and self.result is not None:
            output = Path(self.result.get("output") or self.output_path)
            if output.is_file():
                self.state = SUCCEEDED
                update.fraction = 1.0
                return
            self._fail(_("The segmentation process finished but wrote no output file ({path}).").format(path=output))
            return
        if self.options.device != "cpu" and (
            cli_protocol.is_out_of_memory(self._error_event) or cli_protocol.is_out_of_memory("\n".join(self._tail))
        ):
            # A GPU that is too small is common on laptops; the CPU is slower but always has enough memory.
            self.fell_back_to_cpu = True
            message = _("The GPU ran out of memory; segmenting again on the CPU (slower).")
            self._remember(message, update)
            update.status = message
            update.fraction = 0.0
            self._launch(self.options.on_cpu())
            return
        if self._error_event:
            self._fail(_("Segmentation failed: {message}").format(message=self._error_event))
        elif code == 0:
            self._fail(_("The segmentation process ended without reporting a result."))
        else:
            self._fail(self._crash_message(code))

    def _crash_message(self, code: int) -> str:
        if code is not None and code < 0:
            how = _("was stopped by the system (signal {signal}; often a lack of memory)").format(signal=-code)
        else:
            how = _("stopped unexpectedly (exit code {code})").format(code=code)
        tail = "\n".join(self._tail) or _("(it printed nothing)")
        return _("The segmentation process {how}. Its last output:\n{tail}").format(how=how, tail=tail)

    def _fail(self, message: str) -> None:
        self.state = FAILED
        self.error = message

    def wait(self, timeout: float | None = None) -> None:
        """Block until done (self-test and scripts; the widget polls)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll().done:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError("segmentation did not finish in time")
            time.sleep(0.05)

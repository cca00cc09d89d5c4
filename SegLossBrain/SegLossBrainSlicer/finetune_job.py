"""One fine-tune in the background: scene pairs -> temporary files -> ``seglossbrain finetune --progress-json``.

Needs no Qt: the panel polls :meth:`FinetuneJob.poll` with a timer. The child is the engine's CLI run by the
existing :class:`ChildProcess`, a separate instance from any segmentation, so Segment keeps working meanwhile.
Only one fine-tune runs per Slicer session (a second start is refused here; the engine's store lock refuses
one from another process).

Stop creates the job's stop file (``--stop-file``, in the job's temporary folder; the same on every OS): the
engine finishes its current step and keeps (saves) the best validated weights, which can take a validation's
time, so the child is given minutes before being killed; stopping "now" (``force``) kills it and keeps nothing.
The temporary files, stop file included, are removed once the child has ended.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import cli_protocol
from .cli_protocol import Event
from .i18n import _
from .input_checks import InputProblem
from .process_runner import ChildProcess

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
LOSSES = ("explog", "gdl", "wce")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")  # the engine's rule for version names
STOP_GRACE_SECONDS = 300.0  # a step and a validation on a CPU, then the save
CRASH_LOG_LINES = 15
STOP_FILE_NAME = "stop-request"  # created in the job's temporary folder to stop the engine gracefully
_EVENTS = ("log", "step", "validation", "result", "error", "progress")


@dataclass(frozen=True)
class FinetuneOptions:
    name: str
    loss: str = "explog"
    loss_params: dict = field(default_factory=dict)
    steps: int = 1000  # the most; the engine plans how many fit max_minutes after timing the first steps
    learning_rate: float = 3e-4
    base: str | None = None  # model name or path; None: the engine's active model
    device: str = "auto"
    freeze_encoder: bool = False
    validation_pair: int | None = None  # index into the pairs; None: the engine's choice (last pair held out)
    max_minutes: float = 8.0  # from Start to the new version (the engine's time budget; 0: steps alone decide)
    continue_run: bool = False  # continue the engine's unfinished run ``name`` (its own cases and settings)

    def check(self) -> None:
        if not NAME_PATTERN.match(self.name or "") or self.name.endswith((".safetensors", ".json")):
            raise InputProblem(_("Name the new version with 1-80 letters, digits, '.', '_' or '-', starting with a "
                                 "letter or digit (e.g. 'site-ft-1')."))
        if self.loss not in LOSSES:
            raise InputProblem(_("Unknown loss '{loss}'.").format(loss=self.loss))
        if self.steps < 1:
            raise InputProblem(_("Run at least one step."))
        if not 0 < self.learning_rate < 1:
            raise InputProblem(_("The learning rate must lie between 0 and 1 (3e-4 suits fine-tuning)."))
        if not self.max_minutes >= 0:
            raise InputProblem(_("The time budget must be 0 (none) or more minutes."))
        if self.device not in cli_protocol.DEVICES:
            raise InputProblem(_("Unknown device '{device}'.").format(device=self.device))


def finetune_arguments(pairs: list, options: FinetuneOptions, stop_file=None) -> list[str]:
    """``finetune`` arguments for [(image path, labels path)] in table order; ``stop_file``: the path whose
    creation asks the engine to stop gracefully."""
    if options.continue_run:  # the engine has the cases, settings and checkpoint of the run
        args = ["finetune", "--progress-json", "--continue", options.name, "--device", options.device]
        return args + (["--stop-file", str(stop_file)] if stop_file is not None else [])
    args = ["finetune", "--progress-json", "--name", options.name, "--loss", options.loss,
            "--steps", str(int(options.steps)), "--lr", f"{options.learning_rate:g}", "--device", options.device,
            "--max-minutes", f"{options.max_minutes:g}"]
    for number, (image, labels) in enumerate(pairs):
        flag = "--validation" if number == options.validation_pair else "--pairs"
        args += [flag, f"{image},{labels}"]
    if options.loss_params:
        args += ["--loss-params", json.dumps(options.loss_params, sort_keys=True)]
    if options.base:
        args += ["--base", str(options.base)]
    if options.freeze_encoder:
        args.append("--freeze-encoder")
    if stop_file is not None:
        args += ["--stop-file", str(stop_file)]
    return args


def parse_line(line: str) -> Event:
    """One stdout line of ``finetune --progress-json``; anything else is kept as text for the log."""
    text = line.rstrip("\r\n")
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("event") not in _EVENTS:
        return Event("text", text)
    fraction = None
    if data["event"] == "step":
        try:
            fraction = min(1.0, max(0.0, float(data["step"]) / float(data["total"])))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            fraction = None
    return Event(data["event"], str(data.get("message") or ""), fraction, data)


@dataclass
class FinetuneUpdate:
    """What changed since the last poll: progress bar, status line, log, plot points, Dice table."""

    fraction: float | None = None
    status: str | None = None
    log_lines: list[str] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)  # {"step", "mean", "dice", "before"}
    done: bool = False


def format_eta(seconds) -> str:
    seconds = max(0, int(seconds or 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class FinetuneJob:
    _active: "FinetuneJob | None" = None  # the one fine-tune of this Slicer session

    def __init__(self, pairs: list, options: FinetuneOptions, command_prefix=None, env=None,
                 grace: float = STOP_GRACE_SECONDS, extra_args=()):
        """``pairs``: [(volume node, segmentation node)], checked and written at :meth:`start`; or [(image path,
        labels path)] of pairs already on disk (the review app's pairs folder), passed to the engine as they are.
        ``extra_args``: more ``finetune`` options (e.g. ``--patch-size 32``), appended as given."""
        options.check()
        if options.validation_pair is not None and not 0 <= options.validation_pair < len(pairs):
            raise InputProblem(_("The validation case must be one of the pairs."))
        self.pairs, self.options, self.grace = list(pairs), options, grace
        self.extra_args = [str(a) for a in extra_args]
        self.command_prefix = list(command_prefix) if command_prefix else cli_protocol.engine_command()
        self.env = env if env is not None else cli_protocol.engine_environment()
        self.state = RUNNING
        self.result: dict | None = None
        self.error: str | None = None
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.log: list[str] = []
        self.before: dict | None = None  # validation at step 0: {"mean", "dice"}
        self.latest: dict | None = None  # last validation after step 0
        self.step = 0
        self.stop_requested = False
        self.resumable = False  # the engine kept this run's working folder: it can be continued
        self.workdir: Path | None = None
        self._child: ChildProcess | None = None
        self._tail: deque = deque(maxlen=CRASH_LOG_LINES)
        self._error_event: str | None = None

    # -- control ------------------------------------------------------------------------------------------
    @classmethod
    def running_job(cls) -> "FinetuneJob | None":
        job = cls._active
        return job if job is not None and (job.state == RUNNING or job.child_running) else None

    def start(self) -> None:
        """Write the pairs and start the engine. InputProblem (nothing started) on bad pairs or a busy session."""
        from .finetune_pairs import PairFiles, write_pairs

        if FinetuneJob.running_job() is not None:
            raise InputProblem(_("A fine-tune is already running. Wait for it to finish or stop it first."))
        self.workdir = Path(tempfile.mkdtemp(prefix="SegLossBrain-finetune-"))
        try:
            if self.options.continue_run:
                files = []
            elif self.pairs and all(isinstance(p, (str, Path)) for pair in self.pairs for p in pair):
                files = [PairFiles(Path(image), Path(labels), Path(image).name, Path(labels).name, [])
                         for image, labels in self.pairs]
            else:
                files = write_pairs(self.pairs, self.workdir)
        except Exception:
            self._cleanup()
            raise
        self.notes = [note for pair in files for note in pair.notes]
        self.pairs = []  # the files hold the data now: do not keep scene nodes alive through this job
        stop_file = self.workdir / STOP_FILE_NAME  # unique: the folder is this job's own
        argv = self.command_prefix + finetune_arguments([(p.image, p.labels) for p in files], self.options,
                                                        stop_file) + self.extra_args
        self._child = ChildProcess(argv, env=self.env, stop_file=stop_file, grace=self.grace)
        FinetuneJob._active = self
        try:
            self._child.start()
        except OSError as error:
            self._fail(_("Could not start the fine-tuning process ({command}): {error}").format(
                command=argv[0], error=error))
            self._cleanup()

    def cancel(self, force: bool = False) -> None:
        """Stop: the stop file asks the engine to keep its best validated weights and end (killed if still running
        after ``grace`` seconds); ``force``: killed at once, nothing kept."""
        self.stop_requested = True
        if self._child is not None and self._child.started:
            self._child.cancel(force)  # a child that already ended is left alone: its result is still read
        elif self.state == RUNNING:
            self.state = CANCELLED

    def abandon(self) -> None:
        """Module reloaded or Slicer closing: kill the child now and remove the files; nobody polls again."""
        self.cancel(force=True)
        if self._child is not None:
            try:
                self._child.wait(timeout=2.0)
            except TimeoutError:
                pass
        if self.state == RUNNING:
            self.state = CANCELLED
        self._cleanup()

    @property
    def child_running(self) -> bool:
        return self._child is not None and self._child.running

    # -- progress -----------------------------------------------------------------------------------------
    def poll(self) -> FinetuneUpdate:
        update = FinetuneUpdate()
        if self._child is None or not self._child.started:
            update.done = self.state != RUNNING
            return update
        for stream, line in self._child.poll():
            if stream == "stderr":
                self._remember(line, update)
            else:
                self._take(parse_line(line), update)
        if self.state == RUNNING and self._child.finished:
            self._conclude(update)
            self._cleanup()
        elif self.state == RUNNING and self.step == 0 and update.status is None and self.options.max_minutes:
            # before the first step there is nothing timed yet, but the engine's budget bounds the whole run
            update.status = _("Preparing the cases and scoring the current model; the run ends within about "
                              "{minutes:g} minutes").format(minutes=self.options.max_minutes)
        update.done = self.state != RUNNING
        return update

    def _take(self, event: Event, update: FinetuneUpdate) -> None:
        data = event.data
        if event.kind == "step":
            self.step = int(data.get("step", self.step))
            update.fraction = event.fraction
            update.losses.append((self.step, float(data.get("loss", float("nan")))))
            if not self.stop_requested:
                update.status = _("Step {step} of {total}, loss {loss:.4f}, about {eta} left").format(
                    step=self.step, total=data.get("total", self.options.steps), loss=float(data.get("loss", 0)),
                    eta=format_eta(data.get("eta_s")))
        elif event.kind == "validation":
            record = {"step": int(data.get("step", 0)), "mean": data.get("mean"), "dice": data.get("dice") or {},
                      "before": bool(data.get("before"))}
            if record["before"]:
                self.before = record
            else:
                self.latest = record
            update.validations.append(record)
            mean = "n/a" if record["mean"] is None else f"{record['mean']:.3f}"
            self._remember(_("Validation Dice at step {step}: {mean}").format(step=record["step"], mean=mean), update)
        elif event.kind == "result":
            self.result = data
        elif event.kind == "error":
            self._error_event = event.message
            self._remember(_("Error: {message}").format(message=event.message), update)
        elif event.message or event.kind == "text":
            if data.get("kind") == "resumable":
                self.resumable = True
            if data.get("level") == "warning":
                self.warnings.append(event.message)
            self._remember(event.message, update)

    def _remember(self, line: str, update: FinetuneUpdate) -> None:
        self.log.append(line)
        self._tail.append(line)
        update.log_lines.append(line)

    def _conclude(self, update: FinetuneUpdate) -> None:
        code = self._child.returncode
        saved = self.result is not None and self.result.get("path")
        if saved:  # finished, stopped early, stopped by the user or diverged: the best validated weights kept
            self.state = SUCCEEDED
            update.fraction = 1.0
        elif self.stop_requested:
            self.state = CANCELLED
        elif code in (0, 1) and self.result is not None:
            self._fail(self._error_event or _("The fine-tune ended ({status}) before any validation after the "
                                              "start: no new version was written.").format(
                status=self.result.get("status", "?")))
        elif self._error_event:
            self._fail(_("Fine-tuning failed: {message}").format(message=self._error_event))
        else:
            self._fail(self._crash_message(code))
        update.status = self.summary()

    def _crash_message(self, code) -> str:
        if code is not None and code < 0:
            how = _("was stopped by the system (signal {signal}; often a lack of memory)").format(signal=-code)
        else:
            how = _("stopped unexpectedly (exit code {code})").format(code=code)
        tail = "\n".join(self._tail) or _("(it printed nothing)")
        return _("The fine-tuning process {how}. Its last output:\n{tail}").format(how=how, tail=tail)

    def _fail(self, message: str) -> None:
        self.state = FAILED
        self.error = message

    def summary(self) -> str:
        """What the status line says once the job is done."""
        if self.state == SUCCEEDED:
            result = self.result
            how = {"cancelled": _("Stopped at step {steps}"), "early_stopped": _("Stopped early at step {steps}"),
                   "diverged": _("The loss diverged at step {steps}")}.get(result.get("status"), _("Finished"))
            lines = [how.format(steps=result.get("steps_run")) + ": " + _(
                "kept the weights of step {best} as '{name}'.").format(best=result.get("best_step"),
                                                                       name=result.get("name"))]
            before, after = (result.get("before") or {}).get("mean"), (result.get("after") or {}).get("mean")
            if before is not None and after is not None:
                lines.append(_("Validation Dice {before:.3f} -> {after:.3f}.").format(before=before, after=after))
            return "\n".join(lines + self.warnings)
        if self.state == CANCELLED:
            return _("Stopped before the first validation: no new version was written.")
        if self.state == FAILED:
            return _("Fine-tuning failed.")
        return ""

    def _cleanup(self) -> None:
        if self.workdir is not None and not self.child_running:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def wait(self, timeout: float | None = None) -> None:
        """Block until done (scripts and tests; the panel polls)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll().done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("fine-tuning did not finish in time")
            time.sleep(0.05)

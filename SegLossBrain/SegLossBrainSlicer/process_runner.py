"""A child process whose output is read without ever blocking the caller.

Two daemon threads copy stdout and stderr lines into a queue; :meth:`ChildProcess.poll` drains it. In Slicer
a ``qt.QTimer`` calls ``poll`` a few times a second (see ``panel.py``); tests call it in a loop. Plain
``subprocess`` instead of ``qt.QProcess`` keeps this file free of Qt, so it runs in the headless tests.

Inside Slicer the child is ``PythonSlicer``, a launcher that runs the real interpreter (``python-real``) as its own
child and dies at once on SIGTERM, while the engine may take minutes to stop. So "running" means "the launcher, or
whatever still holds our output pipes", and signals go to the whole process group even after the launcher is gone.

A child that can stop itself cleanly (``seglossbrain finetune --stop-file PATH``) is given that ``stop_file``: a
soft cancel then only creates the file, on every OS (Windows has no SIGTERM a child could catch: ``taskkill /F``
ends it outright), and the child is killed only if it is still running after the grace period.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

# How long a cancelled child gets to stop by itself before it is killed.
CANCEL_GRACE_SECONDS = 3.0


class ChildProcess:
    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None,
                 stop_file: str | Path | None = None, grace: float | None = None):
        """``stop_file``: a path that does not exist yet, which the child watches (see the module docstring);
        ``grace``: seconds a soft cancel waits before killing (default ``CANCEL_GRACE_SECONDS``)."""
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self.grace = grace
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._open_streams = 0
        self._kill_deadline: float | None = None
        self.cancelled = False

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        kwargs = {}
        if os.name == "nt":
            # Own process group (so the whole tree can be ended) and no console window popping up.
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: cancel ends workers the engine may spawn
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._open_streams = 2
        for name, stream in (("stdout", self._process.stdout), ("stderr", self._process.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream) -> None:
        try:
            for line in stream:
                self._lines.put((name, line.rstrip("\r\n")))
        finally:
            stream.close()
            self._lines.put((name, None))  # end-of-stream marker

    def poll(self) -> list[tuple[str, str]]:
        """Lines produced since the last call, as (stream name, text). Never blocks."""
        lines = []
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
            else:
                lines.append((name, line))
        if self._kill_deadline is not None and self.running and time.monotonic() > self._kill_deadline:
            self._signal(kill=True)
            self._kill_deadline = None
        if self.finished:
            self._remove_stop_file()
        return lines

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def running(self) -> bool:
        """The child, or a process it started that still writes to our pipes (PythonSlicer's python-real)."""
        return self._process is not None and (self._process.poll() is None or self._open_streams > 0)

    @property
    def finished(self) -> bool:
        """True once the process has exited and all its output has been read by :meth:`poll`."""
        return self._process is not None and self._process.poll() is not None and self._open_streams <= 0

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def cancel(self, force: bool = False) -> None:
        """Ask the child to stop (its stop file, else SIGTERM); it is killed if still alive after the grace period
        (polled), or at once with ``force`` (when nobody will poll any more). Returns at once."""
        self.cancelled = True
        if not self.running:
            return
        if force:
            self._signal(kill=True)
            self._kill_deadline = None
            return
        if not self._create_stop_file():
            self._signal(kill=False)
        grace = CANCEL_GRACE_SECONDS if self.grace is None else self.grace
        self._kill_deadline = time.monotonic() + grace

    def wait(self, timeout: float | None = None) -> None:
        """Block until finished (self-test and scripts only; the GUI polls instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("child process did not finish in time")
            self.poll()
            time.sleep(0.02)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _create_stop_file(self) -> bool:
        if self.stop_file is None:
            return False
        try:
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.touch()
            return True
        except OSError:
            return False  # cannot write there: a signal is the remaining way to ask

    def _remove_stop_file(self) -> None:
        if self.stop_file is not None:
            try:
                self.stop_file.unlink(missing_ok=True)
            except OSError:
                pass  # left in the temporary folder; harmless, the next job uses another path

    def _signal(self, kill: bool) -> None:
        process = self._process
        if process is None or (os.name == "nt" and process.poll() is not None):
            return  # on Windows the tree is found from a live parent; taskkill has ended it all already
        try:
            if os.name == "nt":
                # taskkill /T ends the child's own children too; TerminateProcess alone would orphan them.
                subprocess.run(
                    ["taskkill", "/T", "/F", "/PID", str(process.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            else:  # the group outlives its leader (the launcher) while python-real is in it
                os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            # Already gone (or the group vanished between the check and the signal): nothing left to stop.
            pass

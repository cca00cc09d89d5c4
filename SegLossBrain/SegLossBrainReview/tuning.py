"""Fine-tune / Stop / Activate from the page, with the existing pieces: the Slicer module's background fine-tune
(``SegLossBrainSlicer.finetune_job.FinetuneJob``: ``seglossbrain finetune --progress-json`` as a child process, its
events, Stop through ``--stop-file`` keeping the best validated weights) on the pairs saved in the pairs folder,
and the engine's model store for Activate (which refuses a version that scored worse than its base unless forced);
once activated, the open case is segmented again with the new version (``ReviewApp.resegment``).
"""
from __future__ import annotations

import asyncio
import time

from .curve import validation_curve_svg

POLL_SECONDS = 0.5


class TuningSession:
    def __init__(self, app, extra_args=(), max_minutes: float = 8.0):
        self.app, self.extra_args, self.max_minutes = app, list(extra_args), max_minutes
        self.job = None

    @property
    def state(self):
        return self.app.state

    @staticmethod
    def default_name() -> str:
        return time.strftime("site-review-%Y%m%d-%H%M")

    @staticmethod
    def active_model() -> str:
        from SegLossBrainLib.models.store import default_model_path

        try:
            return default_model_path().stem
        except Exception as error:  # no model installed: say so on the page instead of failing
            return f"none ({error})"

    def start(self, name: str, pairs: list) -> None:
        from SegLossBrainSlicer.finetune_job import FinetuneJob, FinetuneOptions
        from SegLossBrainSlicer.input_checks import InputProblem

        s = self.state
        if not pairs:
            s.ft_status = "Save at least one correction first: fine-tuning learns from the saved pairs."
            return
        try:
            job = FinetuneJob(pairs, FinetuneOptions(name=(name or "").strip(), max_minutes=self.max_minutes),
                              extra_args=self.extra_args)
            job.start()
        except InputProblem as problem:
            s.ft_status = f"Not started: {problem}"
            return
        if job.state != "running":
            s.ft_status = job.error or "The fine-tune could not start."
            return
        self.job = job
        s.ft_running, s.ft_progress, s.ft_curve, s.ft_curve_svg, s.ft_version = True, 0, [], "", ""
        s.ft_activate_refused, s.activate_status = False, ""
        s.ft_status = f"Fine-tuning '{job.options.name}' on {len(pairs)} pair(s) ..."
        asyncio.get_event_loop().create_task(self._watch(job))

    async def _watch(self, job) -> None:
        while True:
            update = job.poll()
            with self.state:
                self._show(update)
            if update.done:
                break
            await asyncio.sleep(POLL_SECONDS)

    def _show(self, update) -> None:
        s, job = self.state, self.job
        if update.fraction is not None:
            s.ft_progress = round(100 * update.fraction, 1)
        if update.status:
            s.ft_status = update.status
        if update.validations:
            s.ft_curve = s.ft_curve + [{"step": v["step"], "mean": v["mean"]} for v in update.validations]
            s.ft_curve_svg = validation_curve_svg(s.ft_curve)
        if update.done:
            s.ft_running = False
            if job.state == "succeeded" and job.result:
                s.ft_version = str(job.result.get("name") or job.options.name)
                s.ft_status = job.summary() + "\nActivate makes it the default model."
            elif job.state == "failed":
                s.ft_status = job.error or "Fine-tuning failed."
            else:
                s.ft_status = job.summary()

    def stop(self) -> None:
        if self.job is not None and self.state.ft_running:
            self.job.cancel()
            self.state.ft_status = "Stopping after the current step; the best validated weights are kept ..."

    def activate(self, force: bool = False) -> None:
        from SegLossBrainLib.models.files import ModelError
        from SegLossBrainLib.models.store import activate

        s = self.state
        name = s.ft_version
        if not name:
            return
        try:
            activate(name, force=force)
        except (ModelError, ValueError) as error:
            s.activate_status, s.ft_activate_refused = f"Not activated: {error}", not force
            return
        s.ft_activate_refused = False
        s.activate_status = (f"'{name}' is now the default model ('seglossbrain models revert' goes back); "
                             "the case is segmented again with it.")
        s.model_text = s.model_text.split(" | ")[0] + f" | active model: {self.active_model()}"
        asyncio.get_event_loop().create_task(self.app.resegment())

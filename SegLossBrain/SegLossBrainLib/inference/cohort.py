"""``segment_many``: a cohort through one loaded model, one case after another, reading and resampling the next
case in a background thread while the network runs on the current one. One bad case becomes an error result
and the cohort goes on. Also which cases a worker takes when a cohort is split (``--shard``, torchrun ranks).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from ..cpu_engine.runner import OpenVinoNetwork, choose_engine
from ..device import select_device
from ..evaluation.volumes import intracranial_volume_ml
from ..imageio.discovery import Case, discover_cases
from ..imageio.content import refuse_label_map
from ..imageio.volumes import InputError, check_image, check_output_spacing, read_image
from ..models.files import read_metadata
from ..models.store import resolve_model
from ..postprocessing.hemispheres import check_hemisphere_table
from ..preprocessing.output_grid import output_spacing_problem
from .segment import SegmentationResult, finish, load_network, prepare_image, segment_prepared

if TYPE_CHECKING:
    import torch  # annotations only: a cohort on OpenVINO never imports torch


@dataclass
class CaseResult:
    case: Case
    status: str  # "ok" or "error"
    reason: str = ""  # one line, for "error"
    seconds: float = 0.0  # this case's own work: read, resample, network, back to the input grid
    result: SegmentationResult | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def intracranial_volume_ml(self) -> float | None:
        return intracranial_volume_ml(self.result.volumes_ml) if self.result is not None else None


@dataclass
class LoadedModel:
    network: torch.nn.Module | OpenVinoNetwork
    metadata: dict
    device: torch.device | str  # "cpu" for OpenVINO
    name: str = ""  # the model file's name; "" for a network passed in
    engine: str = "torch"  # or "openvino" (``cpu_engine``)

    @property
    def sha256(self) -> str:
        return str(self.metadata.get("sha256", ""))


def load_cohort_model(model=None, device: str = "auto", engine: str = "auto",
                      precision: str | None = "auto") -> LoadedModel:
    """The model, loaded once for a whole cohort (``model``, ``device``, ``engine`` and ``precision`` as ``segment``
    takes them; PyTorch takes the precision per case, OpenVINO compiles with it)."""
    if choose_engine(engine, device, model) == "openvino":
        path = resolve_model(model)
        network = OpenVinoNetwork(path, precision)
        return LoadedModel(network, network.metadata, "cpu", path.stem, "openvino")
    chosen = select_device(device)
    if _is_network(model):
        return LoadedModel(*load_network(model, chosen), chosen)
    path = resolve_model(model)
    return LoadedModel(*load_network(path, chosen), chosen, path.stem)


def model_sha256(model=None) -> str:
    """The sha256 a model file records (checked against the weights when it is loaded); "" for a network."""
    return "" if _is_network(model) else str(read_metadata(resolve_model(model)).get("sha256", ""))


def _is_network(model) -> bool:
    """A loaded network object rather than a model name, path or None (the default)."""
    return not (model is None or isinstance(model, (str, os.PathLike)))


def one_line(error: BaseException) -> str:
    """An error as the table's one-line reason."""
    text = " ".join(str(error).split())
    return text if isinstance(error, InputError) else f"{type(error).__name__}: {text}"


def check_options(output_spacing: float | None = None, hemispheres: bool = False) -> None:
    """Options that no case can meet, refused before any case is read (InputError, HemisphereError)."""
    if output_spacing is not None and output_spacing_problem(output_spacing):
        raise InputError(output_spacing_problem(output_spacing))
    if hemispheres:
        check_hemisphere_table()


def _read_and_prepare(case: Case, force: bool = False):
    start = time.perf_counter()
    try:
        image = read_image(case.path)
        check_image(image)
        if not force:  # a label map or mask given as a case: its error row says so
            refuse_label_map(image, case.case_id)
        return prepare_image(image, checked=True), time.perf_counter() - start
    except Exception as error:  # any unreadable or unusable case is this case's error, not the cohort's
        return error, time.perf_counter() - start


def segment_many(inputs: Iterable, model=None, device: str = "auto", tta: bool = False,
                 with_confidence: bool = False, island_fraction: float = 0.0, force: bool = False,
                 loaded: LoadedModel | None = None, read_ahead: bool = True, output_spacing: float | None = None,
                 hemispheres: bool = False, precision: str | None = "auto",
                 engine: str = "auto", pial_refinement: bool = True) -> Iterator[CaseResult]:
    """Segment every case of ``inputs`` (``Case`` objects, or paths, folders and lists as ``discover_cases``
    takes them) with one model, yielding a ``CaseResult`` per case in order, ok or error.

    ``model``/``device``/``force``/``output_spacing``/``hemispheres``/``precision``/``engine``/``pial_refinement``
    as ``segment`` (``force``
    also segments a case that looks like a label map or mask) (an output spacing too
    fine for one case's field of view is that case's error); or ``loaded`` (from ``load_cohort_model``) to
    reuse a loaded model. The model is loaded before the first case, so a bad model raises instead of failing every case.
    ``read_ahead`` False reads each case only when its turn comes (for measuring what the overlap gains)."""
    # One folder or list may be given alone, as a string.
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    cases = items if all(isinstance(i, Case) for i in items) else discover_cases(items)
    check_options(output_spacing, hemispheres)
    loaded = loaded or load_cohort_model(model, device, engine, precision)
    if not cases:
        return
    # One reader thread: the next case is read and resampled (SimpleITK and numpy release the GIL) while the
    # network runs on this one; one case ahead bounds the memory to two volumes.
    with (ThreadPoolExecutor(1, thread_name_prefix="seglossbrain-reader") if read_ahead else _Now()) as reader:
        upcoming = reader.submit(_read_and_prepare, cases[0], force)
        for index, case in enumerate(cases):
            prepared, read_seconds = upcoming.result()
            if index + 1 < len(cases):
                upcoming = reader.submit(_read_and_prepare, cases[index + 1], force)
            if isinstance(prepared, Exception):
                yield CaseResult(case, "error", one_line(prepared), read_seconds)
                continue
            start = time.perf_counter()
            try:
                if output_spacing is not None:
                    check_output_spacing(prepared.image, output_spacing)
                options = dict(with_confidence=with_confidence, island_fraction=island_fraction, force=force,
                               output_spacing=output_spacing, hemispheres=hemispheres,
                               pial_refinement=pial_refinement)
                if loaded.engine == "openvino":
                    probabilities = loaded.network.predict(prepared.array, tta=tta)
                    result = finish(prepared, probabilities, loaded.metadata, "cpu", loaded.network.precision,
                                    "openvino", return_probabilities=False, report=lambda fraction, message: None,
                                    **options)
                else:
                    result = segment_prepared(prepared, loaded.network, loaded.device, loaded.metadata, tta=tta,
                                              precision=precision, **options)
            except Exception as error:  # e.g. out of memory on one huge case: record it, go on
                yield CaseResult(case, "error", one_line(error), read_seconds + time.perf_counter() - start)
                continue
            del prepared
            yield CaseResult(case, "ok", "", read_seconds + time.perf_counter() - start, result)


class _Now:
    """An executor that runs each job when it is submitted: ``segment_many`` without reading ahead."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, function, *args) -> Future:
        future = Future()
        future.set_result(function(*args))
        return future


@dataclass(frozen=True)
class Worker:
    """This process's share of a cohort: cases ``index``, ``index + count``, ... of the full list."""
    index: int = 0
    count: int = 1
    distributed: bool = False  # a torchrun rank: rank 0 merges the table after a barrier
    local_rank: int = 0
    local_count: int = 1

    def take(self, cases: list) -> list:
        # Round robin rather than blocks: cases in a folder tend to be sorted by site or size, so this balances.
        return cases[self.index::self.count]


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1-based, as job-array indices are written) -> (K - 1, N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k, n = 0, 0
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: give K/N with 1 <= K <= N, e.g. --shard ${{SLURM_ARRAY_TASK_ID}}/10 "
                         "for tasks numbered 1..10")
    return k - 1, n


def worker_from_environment(shard: tuple[int, int] | None = None) -> Worker:
    """The worker from ``--shard`` and torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``); both together split each shard across the ranks of its torchrun."""
    shard_index, shard_count = shard or (0, 1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return Worker(shard_index * world + rank, shard_count * world, world > 1, local_rank, local_world)


def worker_device(worker: Worker, device: str) -> str:
    """One GPU per rank when there are GPUs; otherwise the CPU cores split between the ranks of this machine."""
    if worker.local_count > 1:
        import torch

        if device in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{worker.local_rank % torch.cuda.device_count()}"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // worker.local_count))
    return device

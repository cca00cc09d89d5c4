"""The background run end to end, with a small stand-in for the engine's CLI (no torch, ~0.2 s a run):
progress events, results in the scene, cancel, crash, GPU out-of-memory fallback, input removed meanwhile."""
import contextlib
import os
import signal
import sys
import textwrap
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("SimpleITK")

from SegLossBrainSlicer import segment_job  # noqa: E402
from SegLossBrainSlicer.cli_protocol import SegmentOptions  # noqa: E402
from SegLossBrainSlicer.segment_run import SegmentError, SegmentRun  # noqa: E402
from SegLossBrainSlicer.volume_files import image_from_array, set_ijk_to_ras  # noqa: E402
from SegLossBrainSlicer.volume_table import read_volumes_table  # noqa: E402

# Stand-in for `seglossbrain segment`: same arguments and JSON lines; its behaviour is picked by FAKE_MODE.
FAKE_CLI = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import SimpleITK as sitk
    args = sys.argv[1:]
    assert args[0] == "segment" and "--progress-json" in args
    source, output = args[1], args[2]
    device = args[args.index("--device") + 1]
    confidence = args[args.index("--confidence") + 1] if "--confidence" in args else None
    mode = os.environ.get("FAKE_MODE", "ok")
    def emit(**event):
        print(json.dumps(event), flush=True)
    emit(event="log", message=f"device {device}")
    emit(event="progress", fraction=0.25, message="reading")
    print("a stray line a library printed")
    if mode == "slow":
        time.sleep(60)
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: boom in the network\\n")
        sys.exit(3)
    if mode == "oom" and device != "cpu":
        emit(event="error", message="CUDA out of memory. Tried to allocate 2.00 GiB")
        sys.exit(1)
    if mode == "error":
        emit(event="error", message="model file is damaged")
        sys.exit(2)
    image = sitk.ReadImage(source)
    if "--output-spacing" in args:  # as the engine: on its isotropic grid covering the input
        from SegLossBrainLib.preprocessing.grid import isotropic_grid
        spacing = float(args[args.index("--output-spacing") + 1])
        image = sitk.Resample(image, isotropic_grid(image, spacing), sitk.Transform(), sitk.sitkLinear, 0.0)
    values = sitk.GetArrayFromImage(image)
    labels = (values * 19.999).astype(np.uint8)  # the stand-in "segments" by intensity bands
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(image)
    if mode == "badgrid":
        result.SetSpacing([s * 2 for s in image.GetSpacing()])
    sitk.WriteImage(result, output)
    if confidence:
        conf = sitk.GetImageFromArray((0.5 + labels / 40.0).astype(np.float32))
        conf.CopyInformation(image)
        sitk.WriteImage(conf, confidence)
    emit(event="progress", fraction=1.0, message="done")
    extra = {}
    if mode == "qc":
        extra = {"qc": {"thalamus": "mean confidence 0.60"}, "warnings": ["the brain is cut on the left side"]}
    emit(event="result", output=output, confidence=confidence, volumes_ml={}, **extra)
''')


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)

    def run_with(mode):
        monkeypatch.setenv("FAKE_MODE", mode)
        return [sys.executable, str(script)]

    return run_with


def make_scene_with_volume(shape=(12, 13, 14)):
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    scene._test_logic = logic
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "brain")
    values = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    volume.SetAndObserveImageData(image_from_array(values))
    matrix = np.array([[0, 0, -1.2, 80], [0.9, 0, 0, -100], [0, 1.1, 0, 30], [0, 0, 0, 1]], float)
    set_ijk_to_ras(volume, matrix)
    return scene, volume, values


def node_ids(scene):
    return sorted(scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes()))


def test_run_puts_segmentation_table_and_confidence_in_the_scene(fake_cli):
    scene, volume, values = make_scene_with_volume()
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu", confidence=True), command_prefix=fake_cli("ok"))
    run.start()
    fractions, log = [], []
    while True:
        update = run.poll()
        fractions += [update.fraction] if update.fraction is not None else []
        log += update.log_lines
        if update.done:
            break
        time.sleep(0.02)
    workdir = run.workdir
    result = run.finish()
    assert not workdir.exists()  # temporary files are removed
    assert fractions and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    assert "a stray line a library printed" in log and "device cpu" in log

    expected = (values * 19.999).astype(np.uint8)
    segmentation = result.segmentation
    assert segmentation.GetName() == "brain segmentation"
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 19
    from SegLossBrainSlicer.segmentation_io import segmentation_to_labels

    assert np.array_equal(segmentation_to_labels(segmentation, volume), expected)
    volumes = read_volumes_table(result.volumes_table)
    voxel_ml = 0.9 * 1.1 * 1.2 / 1000.0
    assert volumes["thalamus"] == pytest.approx(np.count_nonzero(expected == 7) * voxel_ml, abs=1e-4)
    assert result.confidence_volume.GetName() == "brain confidence"
    assert result.lowest_confidence[0].name == "cerebral white matter"  # label 1 has the lowest stand-in value


def test_second_run_reuses_the_output_nodes(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    first = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("ok")).run_blocking(30)
    before = node_ids(scene)
    second = SegmentRun(scene, volume, SegmentOptions(device="cpu"), output_segmentation=first.segmentation,
                        volumes_table=first.volumes_table, command_prefix=fake_cli("ok")).run_blocking(30)
    assert second.segmentation is first.segmentation and node_ids(scene) == before


def test_cancel_stops_the_child_and_leaves_the_scene_unchanged(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    before = node_ids(scene)
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("slow"))
    run.start()
    deadline = time.monotonic() + 20
    while run.poll().status != "reading" and time.monotonic() < deadline:  # the child is really working
        time.sleep(0.02)
    started = time.monotonic()
    run.cancel()
    while not run.poll().done:
        time.sleep(0.02)
    assert time.monotonic() - started < 5  # the 60 s child was stopped, not waited for
    assert run.finish() is None
    assert node_ids(scene) == before


def test_crash_gives_a_clear_message_with_the_child_log(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    before = node_ids(scene)
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("crash"))
    with pytest.raises(SegmentError) as caught:
        run.run_blocking(30)
    message = str(caught.value)
    assert "stopped unexpectedly (exit code 3)" in message and "boom in the network" in message
    assert any("Traceback" in line for line in caught.value.log)
    assert node_ids(scene) == before


def test_engine_error_event_is_reported(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("error"))
    with pytest.raises(SegmentError, match="model file is damaged"):
        run.run_blocking(30)


def test_gpu_out_of_memory_falls_back_to_cpu(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    run = SegmentRun(scene, volume, SegmentOptions(device="cuda"), command_prefix=fake_cli("oom"))
    result = run.run_blocking(30)
    assert run.job.fell_back_to_cpu and run.job.options.device == "cpu"
    assert any("ran out of memory" in note for note in result.notes)
    assert any("segmenting again on the CPU" in line for line in run.log)


def test_output_off_the_input_grid_is_refused(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    before = node_ids(scene)
    with pytest.raises(SegmentError, match="voxels|positioned"):
        SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("badgrid")).run_blocking(30)
    assert node_ids(scene) == before


def test_input_removed_while_running_discards_the_result(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("ok"))
    run.start()
    scene.RemoveNode(volume)  # what closing the scene does to it
    run.wait(30)
    with pytest.raises(SegmentError, match="removed, or the scene closed"):
        run.finish()
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_missing_executable_is_a_clear_failure(tmp_path):
    job = segment_job.SegmentJob(tmp_path / "in.nrrd", tmp_path / "out.nrrd", SegmentOptions(device="cpu"),
                                 command_prefix=[str(tmp_path / "no-such-python")])
    job.start()
    assert job.poll().done and job.state == segment_job.FAILED
    assert "Could not start the segmentation process" in job.error


def test_volume_under_a_transform_is_followed_not_hardened(fake_cli):
    import vtk

    scene, volume, values = make_scene_with_volume()
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "to atlas")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(2, 3, 25.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    from SegLossBrainSlicer.volume_files import ijk_to_ras

    geometry_before = ijk_to_ras(volume)
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu", confidence=True), command_prefix=fake_cli("ok"))
    result = run.run_blocking(30)
    assert any("'to atlas'" in note for note in result.notes)
    assert volume.GetTransformNodeID() == transform.GetID()  # the input is not hardened
    assert np.array_equal(ijk_to_ras(volume), geometry_before)
    assert result.segmentation.GetTransformNodeID() == transform.GetID()
    assert result.confidence_volume.GetTransformNodeID() == transform.GetID()
    from SegLossBrainSlicer.segmentation_io import segmentation_to_labels

    assert np.array_equal(segmentation_to_labels(result.segmentation, volume), (values * 19.999).astype(np.uint8))


def test_abandon_kills_the_child_at_once_and_removes_its_files(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("slow"))
    run.start()
    workdir = run.workdir
    started = time.monotonic()
    run.abandon()
    assert time.monotonic() - started < 3
    assert not run.job.child_running and not workdir.exists()


@pytest.mark.slow
def test_real_engine_cli_with_a_random_model(random_model_file):
    """The real `python -m SegLossBrainLib.cli segment --progress-json` (random weights: checks the protocol and
    the geometry, not the anatomy) on an oblique, anisotropic volume; ~7 s on 2 CPU cores."""
    pytest.importorskip("torch")
    import json

    from SegLossBrainSlicer import model_choices
    from SegLossBrainSlicer.segmentation_io import segmentation_to_labels

    scene, volume, _ = make_scene_with_volume(shape=(30, 32, 34))
    matrix = np.array([[0, 0, -2.1, 80], [1.9, 0.3, 0, -100], [-0.3, 1.9, 0, 30], [0, 0, 0, 1]], float)
    set_ijk_to_ras(volume, matrix)
    sha256 = json.loads(random_model_file.with_suffix(".json").read_text())["sha256"]
    choice = model_choices.ModelChoice("user:random", "random", str(random_model_file), "user", sha256)
    # Random weights find no brain: the engine refuses with a message the panel shows as it is (no traceback).
    run = SegmentRun(scene, volume, SegmentOptions(choice.path, "cpu", confidence=True), model_sha256=choice.sha256)
    with pytest.raises(SegmentError, match="no brain found: the network found .* mL of brain") as refused:
        run.run_blocking(240)
    assert "Traceback" not in str(refused.value)
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    run = SegmentRun(scene, volume, SegmentOptions(choice.path, "cpu", confidence=True, force=True),
                     model_sha256=choice.sha256)
    result = run.run_blocking(240)
    assert any("running the network" in line or "cpu" in line for line in run.log + [run.job.options.device])
    assert result.segmentation.GetSegmentation().GetNumberOfSegments() == 19
    labels = segmentation_to_labels(result.segmentation, volume)
    assert labels.shape == (30, 32, 34) and labels.max() < 20
    assert result.confidence_volume is not None and len(result.volumes) == 19


def test_tampered_model_is_refused_before_running(tmp_path):
    from SegLossBrainSlicer.input_checks import InputProblem

    scene, volume, _ = make_scene_with_volume()
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights that were edited")
    with pytest.raises(InputProblem, match="does not match its recorded checksum"):
        SegmentRun(scene, volume, SegmentOptions(str(model), "cpu"), model_sha256="0" * 64)
    with pytest.raises(InputProblem, match="is missing"):
        SegmentRun(scene, volume, SegmentOptions(str(tmp_path / "gone.safetensors"), "cpu"))


# Inside Slicer the child is PythonSlicer: a launcher that starts python-real as its own child (sharing our pipes)
# and dies at once on SIGTERM, while the engine may ignore SIGTERM for a while (fine-tune: finish the step, save).
FAKE_LAUNCHER = textwrap.dedent('''
    import subprocess, sys
    engine = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
              "time.sleep(60)")
    sys.exit(subprocess.Popen([sys.executable, "-c", engine]).wait())
''')


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
@pytest.mark.parametrize("stop", ["force", "grace"])
def test_a_launched_engine_is_still_stopped_after_its_launcher_died(tmp_path, monkeypatch, stop):
    from SegLossBrainSlicer import process_runner

    monkeypatch.setattr(process_runner, "CANCEL_GRACE_SECONDS", 0.3)
    script = tmp_path / "launcher.py"
    script.write_text(FAKE_LAUNCHER)
    child = process_runner.ChildProcess([sys.executable, str(script)])
    child.start()
    try:
        deadline = time.monotonic() + 10
        while ("stdout", "ready") not in child.poll():
            assert time.monotonic() < deadline, "the stand-in engine did not start"
            time.sleep(0.02)
        child.cancel()  # SIGTERM: the launcher dies, the engine carries on
        while child._process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child.poll()
        assert child.running and not child.finished  # the engine still holds the pipes
        if stop == "force":
            child.cancel(force=True)  # "Stop now", or the module closing (abandon)
        child.wait(timeout=5)  # "grace": poll() kills it once the grace period is over
        assert child.finished and not child.running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child._process.pid, signal.SIGKILL)  # never leave the stand-in engine behind


# A child that stops itself cleanly once its stop file exists (the fine-tune engine's --stop-file) and, like the
# engine on Windows, has no SIGTERM to catch: a soft stop must work through the file alone.
FAKE_STOPPABLE = textwrap.dedent('''
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_file, mode = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if mode == "graceful" and os.path.exists(stop_file):
            print("stop file seen: kept the validated weights", flush=True)
            sys.exit(0)
        time.sleep(0.02)
    sys.exit(3)
''')


@pytest.mark.parametrize("mode", ["graceful", "stubborn"])
def test_soft_cancel_creates_the_stop_file_and_kills_only_after_the_grace_period(tmp_path, mode):
    from SegLossBrainSlicer import process_runner

    script = tmp_path / "stoppable.py"
    script.write_text(FAKE_STOPPABLE)
    stop_file = tmp_path / "job" / "stop-request"  # a fresh path in the job's own temporary folder
    child = process_runner.ChildProcess([sys.executable, str(script), str(stop_file), mode], stop_file=stop_file,
                                        grace=0.5 if mode == "stubborn" else 20)
    child.start()
    try:
        deadline = time.monotonic() + 10
        output = []
        while ("stdout", "ready") not in output:
            assert time.monotonic() < deadline, "the stand-in did not start"
            output += child.poll()
            time.sleep(0.02)
        assert not stop_file.exists()
        child.cancel()
        assert stop_file.exists() and child.cancelled
        while not child.finished:
            assert time.monotonic() < deadline, "the stand-in did not end"
            output += child.poll()
            time.sleep(0.02)
        output += child.poll()
        if mode == "graceful":  # ended by itself, with its own exit code and last words: nothing was killed
            assert child.returncode == 0 and ("stdout", "stop file seen: kept the validated weights") in output
        else:  # ignores the file: killed once the grace period is over, as before
            assert child.returncode != 0 and child.returncode != 3
        assert not stop_file.exists()  # removed once the child has ended
    finally:
        if child.running:
            child.cancel(force=True)


def test_engine_qc_flags_and_warnings_reach_the_result_and_the_table(fake_cli):
    scene, volume, _ = make_scene_with_volume()
    result = SegmentRun(scene, volume, SegmentOptions(device="cpu"), command_prefix=fake_cli("qc")).run_blocking(30)
    assert result.qc_flags == {"thalamus": "mean confidence 0.60"}
    assert any("cut on the left side" in note for note in result.notes)
    table = result.volumes_table.GetTable()
    names = [table.GetColumnByName("Structure").GetValue(r) for r in range(table.GetNumberOfRows())]
    assert table.GetColumnByName("QC").GetValue(names.index("thalamus")) == "mean confidence 0.60"

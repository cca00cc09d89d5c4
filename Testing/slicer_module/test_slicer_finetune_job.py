"""The fine-tune background job and the model version actions, with a stand-in for the engine's CLI (no torch,
a fraction of a second a run) on a real MRML scene: progress, loss and Dice events, stop keeping the last
validated state, stop before any validation, crash, engine errors, one fine-tune at a time while Segment still
works, and list / activate / revert / delete."""
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("SimpleITK")

from SegLossBrainSlicer import cli_protocol, finetune_job, model_versions  # noqa: E402
from SegLossBrainSlicer.finetune_job import FinetuneJob, FinetuneOptions  # noqa: E402
from SegLossBrainSlicer.input_checks import InputProblem  # noqa: E402
from test_slicer_finetune import add_segmentation, add_volume, brain_labels, make_scene  # noqa: E402
from test_slicer_mrml import oblique_matrix  # noqa: E402

# Stand-in for `seglossbrain finetune` and `seglossbrain models`: same arguments and JSON lines, behaviour by
# FAKE_MODE; it records what it was given (and whether each pair's two files share one grid) in FAKE_RECORD.
FAKE_ENGINE = textwrap.dedent('''
    import json, os, signal, sys, time
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_MODE", "ok")
    def emit(**event):
        print(json.dumps(event), flush=True)
    if args[0] == "models":
        assert args[1] == "--progress-json", args
        store = os.environ["FAKE_STORE"]
        versions = json.load(open(store))
        action, name = args[2], (args[3] if len(args) > 3 else None)
        if mode == "crash":
            sys.stderr.write("ImportError: numpy is broken\\n")
            sys.exit(1)
        if action == "list":
            emit(event="result", models=versions)
            sys.exit(0)
        found = [v for v in versions if v["name"] == name]
        if action in ("activate", "delete") and not found:
            emit(event="error", message=f"no model version named {name!r}")
            sys.exit(2)
        if action == "delete" and found[0]["active"]:
            emit(event="error", message=f"{name!r} is the active model; revert first")
            sys.exit(2)
        if action == "activate":
            for v in versions:
                v["active"] = v["name"] == name
        elif action == "revert":
            for v in versions:
                v["active"] = v["source"] == "shipped"
        else:
            versions.remove(found[0])
        json.dump(versions, open(store, "w"))
        emit(event="result", action=action, message=f"{action} done")
        sys.exit(0)
    assert args[0] == "finetune" and "--progress-json" in args, args
    value = lambda flag: args[args.index(flag) + 1] if flag in args else None
    pairs = [args[i + 1].split(",") for i, a in enumerate(args) if a in ("--pairs", "--validation")]
    if os.environ.get("FAKE_RECORD"):
        import numpy as np, SimpleITK as sitk
        grids = []
        for image, labels in pairs:
            a, b = sitk.ReadImage(image), sitk.ReadImage(labels)
            same = a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing()) and \\
                np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection())
            grids.append({"same": bool(same), "labels": sorted(int(v) for v in np.unique(sitk.GetArrayFromImage(b)))})
        json.dump({"argv": args, "grids": grids}, open(os.environ["FAKE_RECORD"], "w"))
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: boom while training\\n")
        sys.exit(3)
    if mode == "error":
        emit(event="error", message="another fine-tune is running on this model store")
        sys.exit(2)
    stop, stop_file = [], value("--stop-file")
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else (lambda *a: stop.append(1)))
    def stop_asked():  # the stop file (every OS) or SIGTERM; "stubborn" ignores both
        return bool(stop) or (mode != "stubborn" and stop_file is not None and os.path.exists(stop_file))
    if mode == "early":  # still reading the pairs: a stop keeps nothing, as with the engine
        deadline = time.time() + 60
        while not stop_asked() and time.time() < deadline:
            time.sleep(0.02)
        emit(event="result", status="cancelled", name=value("--name"), path=None, steps_run=0, best_step=None,
             before=None, after=None)
        sys.exit(1)
    dice = lambda step: {"thalamus": round(0.4 + 0.01 * step, 4), "caudate": None}
    before = {"mean": 0.5, "dice": dice(0)}
    emit(event="log", message="validation: the last pair held out")
    emit(event="validation", step=0, before=True, score=0.5, **before)
    total, best, step = int(value("--steps") or 6), None, 0  # --continue: the run's own steps
    for step in range(1, total + 1):
        time.sleep(0.05 if mode in ("slow", "stubborn") else 0)
        emit(event="step", step=step, loss=round(1.0 / step, 4), total=total, elapsed_s=0, eta_s=(total - step) * 0.05)
        if step % 2 == 0:
            best = step
            emit(event="validation", step=step, score=0.5 + 0.01 * step, mean=0.5 + 0.01 * step, dice=dice(step),
                 best_step=step, best_mean=0.5 + 0.01 * step)
        if stop_asked():
            emit(event="log", kind="stopped", message=f"cancelled at step {step}; keeping the last validated weights")
            break
    status, name = ("cancelled" if stop_asked() else "finished"), value("--name") or f"{value('--continue')}-continued"
    if status == "cancelled":
        emit(event="log", kind="resumable", message=f"the run can be continued from step {step}")
    if best is None:
        emit(event="result", status=status, name=name, path=None, steps_run=step, best_step=None, before=before,
             after=None)
        sys.exit(1)
    after = {"mean": 0.5 + 0.01 * best, "dice": dice(best)}
    emit(event="result", status=status, name=name, path=f"/store/{name}.safetensors", steps_run=step, best_step=best,
         before=before, after=after)
''')


# -- the background job -------------------------------------------------------------------------------------
@pytest.fixture
def engine(tmp_path, monkeypatch):
    """The stand-in engine as the command, a scene with two pairs, a record of what the engine was given."""
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    monkeypatch.setattr(cli_protocol, "engine_command", lambda python=None: [sys.executable, str(script)])
    scene = make_scene()
    pairs = []
    for name, structures in (("a", (1, 2, 7)), ("b", (1, 2, 8, 9))):
        volume = add_volume(scene, name=name, matrix=oblique_matrix())
        pairs.append((volume, add_segmentation(scene, volume, brain_labels(structures=structures), f"{name} seg")))

    def mode(name):
        monkeypatch.setenv("FAKE_MODE", name)

    yield type("Engine", (), {"scene": scene, "pairs": pairs, "record": record, "mode": staticmethod(mode)})
    job = FinetuneJob.running_job()
    if job is not None:
        job.abandon()


def run_job(job, timeout=30):
    updates = []
    deadline = time.monotonic() + timeout
    while True:
        update = job.poll()
        updates.append(update)
        if update.done:
            return updates
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.02)


def test_job_reports_progress_loss_validation_and_result(engine):
    engine.mode("ok")
    options = FinetuneOptions("site-1", "explog", {"gamma": 0.3, "w_dice": 0.8, "w_cross": 0.2}, steps=4,
                              learning_rate=2e-4, device="cpu")
    job = FinetuneJob(engine.pairs, options)
    job.start()
    workdir = job.workdir
    updates = run_job(job)
    assert job.state == finetune_job.SUCCEEDED and job.error is None and not workdir.exists()
    fractions = [u.fraction for u in updates if u.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [p for u in updates for p in u.losses] == [(1, 1.0), (2, 0.5), (3, 0.3333), (4, 0.25)]
    statuses = [u.status for u in updates if u.status]
    assert "ends within about 8 minutes" in statuses[0]  # from the start, before any step is timed
    assert any(s.startswith("Step ") and " of 4, loss " in s for s in statuses)
    validations = [v for u in updates for v in u.validations]
    assert [v["step"] for v in validations] == [0, 2, 4] and validations[0]["before"]
    assert job.before["mean"] == 0.5 and job.latest["dice"]["thalamus"] == 0.44
    assert "kept the weights of step 4 as 'site-1'" in job.summary() and "0.500 -> 0.540" in job.summary()
    given = json.loads(engine.record.read_text())
    argv = given["argv"]
    assert argv[:2] == ["finetune", "--progress-json"] and argv.count("--pairs") == 2
    assert argv[argv.index("--loss") + 1] == "explog" and argv[argv.index("--lr") + 1] == "0.0002"
    assert argv[argv.index("--max-minutes") + 1] == "8"  # the engine's time budget reaches it
    assert json.loads(argv[argv.index("--loss-params") + 1]) == {"gamma": 0.3, "w_cross": 0.2, "w_dice": 0.8}
    stop_file = Path(argv[argv.index("--stop-file") + 1])  # a fresh path in the job's own temporary folder
    assert stop_file.parent == workdir and not stop_file.exists()
    assert given["grids"] == [{"same": True, "labels": [0, 1, 2, 7]}, {"same": True, "labels": [0, 1, 2, 8, 9]}]


def test_stop_keeps_the_last_validated_state(engine):
    engine.mode("slow")
    job = FinetuneJob(engine.pairs, FinetuneOptions("site-2", "gdl", steps=1000))
    job.start()
    deadline = time.monotonic() + 20
    while job.latest is None:  # a validated state exists
        assert time.monotonic() < deadline
        job.poll()
        time.sleep(0.02)
    started = time.monotonic()
    stop_file = job.workdir / finetune_job.STOP_FILE_NAME
    job.cancel()  # creates the stop file (no signal, as on Windows); the stand-in ends after its step
    assert stop_file.is_file() and job._child.running
    run_job(job)
    assert time.monotonic() - started < 5 and not stop_file.exists()
    assert job._child.returncode == 0  # ended by itself, not killed
    assert job.state == finetune_job.SUCCEEDED and job.result["status"] == "cancelled"
    assert job.summary().startswith("Stopped at step") and "as 'site-2'" in job.summary()
    assert job.result["best_step"] < 1000


def test_stop_before_any_validation_keeps_nothing_and_stop_now_kills(engine):
    engine.mode("early")
    job = FinetuneJob(engine.pairs, FinetuneOptions("site-3", "wce", steps=10))
    job.start()
    time.sleep(0.3)
    job.cancel()
    run_job(job, timeout=10)
    assert job.state == finetune_job.CANCELLED and "no new version" in job.summary()
    engine.mode("stubborn")  # ignores SIGTERM: after the grace period, or at once with force, it is killed
    job = FinetuneJob(engine.pairs, FinetuneOptions("site-4", "wce", steps=1000), grace=0.5)
    job.start()
    time.sleep(0.3)
    started = time.monotonic()
    job.cancel()
    run_job(job, timeout=10)
    assert job.state == finetune_job.CANCELLED and time.monotonic() - started < 4


def test_crash_and_engine_error_give_clear_messages(engine):
    engine.mode("crash")
    job = FinetuneJob(engine.pairs, FinetuneOptions("site-5", steps=4))
    job.start()
    run_job(job)
    assert job.state == finetune_job.FAILED and "exit code 3" in job.error and "boom while training" in job.error
    engine.mode("error")
    job = FinetuneJob(engine.pairs, FinetuneOptions("site-5", steps=4))
    job.start()
    run_job(job)
    assert job.error == "Fine-tuning failed: another fine-tune is running on this model store"


def test_second_start_is_refused_while_one_runs_and_segment_still_works(engine, monkeypatch):
    from SegLossBrainSlicer.cli_protocol import SegmentOptions
    from SegLossBrainSlicer.segment_run import SegmentRun
    from test_slicer_runner import FAKE_CLI

    engine.mode("slow")
    job = FinetuneJob(engine.pairs, FinetuneOptions("site-6", steps=1000))
    job.start()
    with pytest.raises(InputProblem, match="already running"):
        FinetuneJob(engine.pairs, FinetuneOptions("site-7", steps=10)).start()
    segment_cli = engine.record.parent / "fake_segment.py"
    segment_cli.write_text(FAKE_CLI)
    monkeypatch.setenv("FAKE_MODE", "ok")  # read by the segment stand-in, started after the fine-tune
    volume = engine.pairs[0][0]
    result = SegmentRun(engine.scene, volume, SegmentOptions(device="cpu"),
                        command_prefix=[sys.executable, str(segment_cli)]).run_blocking(30)
    assert result.segmentation.GetSegmentation().GetNumberOfSegments() == 19
    assert job.child_running and FinetuneJob.running_job() is job
    job.cancel(force=True)
    run_job(job)
    assert FinetuneJob.running_job() is None


def test_bad_pairs_or_options_start_nothing(engine):
    volume, segmentation = engine.pairs[0]
    job = FinetuneJob([(volume, None)], FinetuneOptions("site-8"))
    with pytest.raises(InputProblem, match="Select a segmentation"):
        job.start()
    assert job.workdir is None and FinetuneJob.running_job() is None and not engine.record.exists()
    for bad in (dict(name="bad name!"), dict(name="x.safetensors"), dict(name="ok", learning_rate=2.0),
                dict(name="ok", loss="dice"), dict(name="ok", steps=0)):
        with pytest.raises(InputProblem):
            FinetuneJob(engine.pairs, FinetuneOptions(**bad))


def test_validation_pair_is_passed_as_validation():
    args = finetune_job.finetune_arguments([("a.nrrd", "al.nrrd"), ("b.nrrd", "bl.nrrd")],
                                           FinetuneOptions("v", "wce", validation_pair=0, freeze_encoder=True,
                                                           base="/m/base.safetensors"))
    assert args[args.index("--validation") + 1] == "a.nrrd,al.nrrd" and args.count("--pairs") == 1
    assert "--freeze-encoder" in args and args[args.index("--base") + 1] == "/m/base.safetensors"
    assert "--loss-params" not in args


# -- model versions -----------------------------------------------------------------------------------------
@pytest.fixture
def store(engine, tmp_path, monkeypatch):
    path = tmp_path / "versions.json"
    path.write_text(json.dumps([
        {"name": "wong2018-explog", "source": "shipped", "active": True, "path": "/s/w.safetensors", "loss": "explog",
         "steps": 9000, "base": None, "created": None, "dice_before": None, "dice_after": None},
        {"name": "site-1", "source": "user", "active": False, "path": "/u/site-1.safetensors", "loss": "gdl",
         "steps": 40, "base": "wong2018-explog", "created": "2026", "dice_before": 0.71, "dice_after": 0.78}]))
    monkeypatch.setenv("FAKE_STORE", str(path))
    engine.mode("ok")
    return path


def test_version_list_activate_revert_delete(store):
    versions = model_versions.list_versions()
    assert [v.key for v in versions] == ["shipped:wong2018-explog", "user:site-1"]
    assert versions[0].active and not versions[0].can_delete and versions[1].can_delete
    assert versions[1].label() == "site-1 (fine-tuned, loss gdl, from wong2018-explog, Dice 0.710 -> 0.780)"
    call = model_versions.VersionsCall("activate", "site-1").run_blocking(30)
    assert call.ok and call.message == "activate done"
    active = model_versions.active_version(model_versions.list_versions())
    assert active.key == "user:site-1"
    call = model_versions.VersionsCall("delete", "site-1").run_blocking(30)
    assert not call.ok and call.error == "'site-1' is the active model; revert first"
    assert model_versions.VersionsCall("revert").run_blocking(30).ok
    assert model_versions.VersionsCall("delete", "site-1").run_blocking(30).ok
    assert [v.name for v in model_versions.list_versions()] == ["wong2018-explog"]


def test_version_command_crash_is_reported(store, engine):
    engine.mode("crash")
    call = model_versions.VersionsCall("list").run_blocking(30)
    assert "exit code 1" in call.error and "numpy is broken" in call.error
    with pytest.raises(ValueError):
        model_versions.models_arguments("delete")


def test_real_engine_models_command_on_an_empty_store(tmp_path):
    env = cli_protocol.engine_environment()
    env["SEGLOSSBRAIN_MODEL_STORE"] = str(tmp_path / "store")
    listing = model_versions.VersionsCall("list", env=env).run_blocking(60)
    assert listing.ok and all(v.source == "shipped" for v in listing.versions)  # none of the user's
    missing = model_versions.VersionsCall("delete", "nothing-here", env=env).run_blocking(60)
    assert missing.error == "no user model version named 'nothing-here'"


@pytest.mark.slow
def test_real_engine_finetune_from_the_scene(tmp_path, random_model_file):
    """The real `finetune --progress-json` (random base weights: checks the protocol, files and store, not the
    anatomy) on one pair from a scene; 2 steps, ~20 s on 2 CPU cores."""
    import numpy as np

    scene = make_scene()
    shape = (40, 40, 40)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    radius = np.sqrt((k - 20) ** 2 + (j - 20) ** 2 + (i - 20) ** 2)
    labels = np.select([radius < 6, radius < 11, radius < 15], [7, 1, 2], 0).astype(np.uint8)
    volume = add_volume(scene, shape=shape, matrix=np.diag([2.0, 2.0, 2.0, 1.0]))
    values = np.select([labels == 7, labels == 1, labels == 2], [0.6, 0.9, 0.4], 0.05).astype(np.float32)
    from SegLossBrainSlicer.volume_files import image_from_array

    volume.SetAndObserveImageData(image_from_array(values + np.float32(0.01) * np.random.default_rng(0).random(shape,
                                                                                                        np.float32)))
    pair = (volume, add_segmentation(scene, volume, labels))
    env = cli_protocol.engine_environment()
    env["SEGLOSSBRAIN_MODEL_STORE"] = str(tmp_path / "store")
    job = FinetuneJob([pair], FinetuneOptions("slicer-ft", "gdl", steps=2, base=str(random_model_file), device="cpu"),
                      env=env)
    job.start()
    updates = run_job(job, timeout=240)
    assert job.state == finetune_job.SUCCEEDED, (job.error, job.log[-20:])
    assert [p[0] for u in updates for p in u.losses] == [1, 2] and job.before is not None
    assert job.result["name"] == "slicer-ft" and (tmp_path / "store" / "slicer-ft.safetensors").is_file()
    assert set(job.result["after"]["dice"]) >= {"thalamus", "cerebral white matter"}
    versions = model_versions.list_versions(env=env)
    assert [v.key for v in versions if v.source == "user"] == ["user:slicer-ft"]


def test_continue_asks_the_engine_for_its_unfinished_run_and_learns_when_a_run_is_resumable():
    options = FinetuneOptions("site-9", device="cpu", continue_run=True)
    argv = finetune_job.finetune_arguments([], options, stop_file="/tmp/x/stop")
    assert argv == ["finetune", "--progress-json", "--continue", "site-9", "--device", "cpu", "--stop-file",
                    "/tmp/x/stop"]  # no pairs or settings: the engine kept them with the run
    job = FinetuneJob([], options)
    assert not job.resumable
    line = json.dumps({"event": "log", "kind": "resumable", "message": "the run can be continued from step 7"})
    job._take(finetune_job.parse_line(line), finetune_job.FinetuneUpdate())
    assert job.resumable and job.log[-1] == "the run can be continued from step 7"


@pytest.mark.parametrize("before,after", [(0.78, 0.71), (0.71, 0.78), (0.75, 0.75), (None, 0.7)])
def test_a_version_worse_than_its_base_is_activated_only_with_force(before, after):
    """The panel asks before activating such a version and then passes --force; its rule is the store's."""
    from SegLossBrainLib.models.store import worse_than_base

    version = model_versions.ModelVersion("site-2", "user", False, dice_before=before, dice_after=after)
    metadata = {"validation": {"before": {"mean": before}, "after": {"mean": after}}}
    assert version.worse_than_base == (worse_than_base(metadata) is not None)
    assert model_versions.models_arguments("activate", "site-2", force=True)[-1] == "--force"
    assert "--force" not in model_versions.models_arguments("activate", "site-2")
    assert "--force" not in model_versions.models_arguments("delete", "site-2", force=True)

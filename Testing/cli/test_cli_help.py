"""The help texts: every option of every command explained, the top-level description whole, one vocabulary for
--device, --precision and --model; ``--help``, ``info`` and a refused input answer without loading torch."""
import argparse
import subprocess
import sys

import pytest

from SegLossBrainLib.cli import DESCRIPTION, build_parser
from SegLossBrainLib.cli.common import DEVICE_HELP, MODEL_HELP, PRECISION_HELP


def commands(parser=None, prefix="seglossbrain"):
    """(name, parser) of every command and nested sub-command."""
    parser = parser or build_parser()
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}")


def options(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_every_option_of_every_command_has_help():
    missing = [f"{name}: {action.option_strings or action.dest}" for name, parser in commands()
               for action in options(parser) if not (action.help or "").strip()]
    assert missing == []


def test_the_top_level_description_is_whole():
    parser = build_parser()
    assert parser.description == DESCRIPTION and DESCRIPTION.rstrip().endswith(".")
    text = parser.format_help()
    assert "exit code" in text.lower() and "--progress-json" in text


@pytest.mark.parametrize("option, expected_help", [("--device", DEVICE_HELP), ("--precision", PRECISION_HELP),
                                                   ("--model", MODEL_HELP)])
def test_device_precision_and_model_mean_the_same_in_every_command(option, expected_help):
    found = {}
    for name, parser in commands():
        for action in options(parser):
            if option in action.option_strings:
                found[name] = action
    assert len(found) >= (6 if option != "--model" else 4), sorted(found)
    for name, action in found.items():
        assert action.help.startswith(expected_help), name
        if option == "--precision":
            assert tuple(action.choices) == ("auto", "fp32", "bf16"), name
            assert action.default in ("auto", None), name  # None: the engine's auto, or a continued run's own
        if option == "--device":
            assert action.metavar == "{auto,cpu,cuda,mps}" and action.type("cuda:1") == "cuda:1", name
            with pytest.raises(argparse.ArgumentTypeError):
                action.type("tpu")
    assert "active version" in MODEL_HELP


def loaded_modules(*argv):
    """The heavy modules a fresh interpreter has loaded after running ``seglossbrain ARGV``."""
    code = ("import sys\nfrom SegLossBrainLib.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint('LOADED:' + ' '.join(m for m in ('torch', 'SimpleITK') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    return [line for line in result.stdout.splitlines() if line.startswith("LOADED:")][-1][len("LOADED:"):]


def test_help_info_and_a_refused_input_load_neither_torch_nor_simpleitk(tmp_path):
    assert loaded_modules("--help") == ""
    assert loaded_modules("segment", "--help") == ""
    assert loaded_modules("segment", str(tmp_path / "missing.nii.gz"), str(tmp_path / "labels.nii.gz")) == ""
    assert loaded_modules("segment", str(tmp_path), str(tmp_path / "labels.png")) == ""
    import importlib.metadata

    if importlib.metadata.version("torch").endswith("+cpu"):  # a GPU build must ask torch about the GPU
        assert "torch" not in loaded_modules("info")

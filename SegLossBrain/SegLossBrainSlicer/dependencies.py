"""The engine's Python packages: what is missing, and installing it after one confirmation.

Nothing is installed at startup or import: only when the user asks to segment. torch comes through the PyTorch
extension (it picks the CUDA build that fits the driver); the rest through Slicer's package manager. The checks
read package metadata only, so torch is never imported in the Slicer process.
"""
from __future__ import annotations

import importlib.metadata
import sys

from .i18n import _

# Distribution name -> requirement. Same as the engine's pyproject.toml (a test keeps them in step).
REQUIREMENTS = {
    "torch": "torch>=2.1",
    "numpy": "numpy>=1.24",
    "SimpleITK": "SimpleITK>=2.3",
    "nibabel": "nibabel>=5.0",
    "safetensors": "safetensors>=0.4",
    "tqdm": "tqdm>=4.60",
    "highdicom": "highdicom>=0.22",
    "openvino": "openvino>=2024.4",
}
TORCH = "torch"


def _satisfied(requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no 'packaging': presence is the best we can check
        Requirement = None
    name = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if Requirement is None:
        return True
    return Requirement(requirement).specifier.contains(installed, prereleases=True)


def missing_requirements(requirements: dict | None = None) -> list[str]:
    """Requirement strings not satisfied in this Python, torch first (it is the big one)."""
    requirements = REQUIREMENTS if requirements is None else requirements
    missing = [req for req in requirements.values() if not _satisfied(req)]
    return sorted(missing, key=lambda req: not req.startswith(TORCH))


def confirmation_text(missing: list[str]) -> str:
    lines = "\n".join(f"  - {req}" for req in missing)
    text = _("SegLossBrain needs these Python packages, which are not installed yet:\n{lines}\n\n").format(
        lines=lines)
    if any(req.startswith(TORCH) for req in missing):
        text += _("PyTorch is large (up to a few GB, with GPU support when a suitable NVIDIA driver is found); "
                  "downloading it may take several minutes.\n\n")
    return text + _("Install them now?")


def ensure_dependencies() -> bool:
    """Inside Slicer: True when everything is (now) installed; False when the user declined or it failed.

    One confirmation lists everything; the installers then run without asking again.
    """
    import slicer

    missing = missing_requirements()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(confirmation_text(missing), windowTitle=_("Install dependencies")):
        return False
    imported_before = {name for name in REQUIREMENTS if name in sys.modules}
    try:
        torch_req = [req for req in missing if req.startswith(TORCH)]
        others = [req for req in missing if not req.startswith(TORCH)]
        if torch_req:
            _install_torch(torch_req[0])
        if others:
            _install_packages(others)
    except Exception as error:  # pip and network errors come in many types; all are reported the same way
        slicer.util.errorDisplay(_("Installing the packages failed: {error}\nSee the Python console for "
                                   "details. You can retry, or install them from the PyTorch Utils module and "
                                   "the Python console.").format(error=error))
        return False
    still_missing = missing_requirements()
    if still_missing:
        slicer.util.errorDisplay(_("These packages are still missing after installation: {names}").format(
            names=", ".join(still_missing)))
        return False
    if imported_before & {req.split(">")[0] for req in missing}:
        # An older version was already loaded in this session: only a restart loads the new one.
        if slicer.util.confirmYesNoDisplay(_("Packages that were already loaded have been updated. Restart "
                                             "Slicer now so that the new versions are used?")):
            slicer.util.restart()
    return True


def _install_torch(requirement: str) -> None:
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        # PyTorch extension absent (the extension depends on it, but a developer build may lack it).
        _install_packages([requirement])
        return
    version = requirement[len(TORCH):]
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=version)
    if torch is None:
        raise RuntimeError(_("PyTorch was not installed."))
    slicer.app.processEvents()


def _install_packages(requirements: list[str]) -> None:
    import slicer

    try:
        import slicer.packaging as packaging  # Slicer >= 5.12
        ensure = packaging.pip_ensure
    except (ImportError, AttributeError):
        try:
            import slicer.pydeps as packaging  # the same API under its first name (Slicer 5.11)
            ensure = packaging.pip_ensure
        except (ImportError, AttributeError):
            ensure = None
    if ensure is not None:
        # The user already confirmed the full list, and ensure_dependencies offers the restart once for all.
        ensure(requirements, prompt_install=False, prompt_restart=False, requester="SegLossBrain")
    else:
        slicer.util.pip_install(" ".join(requirements))

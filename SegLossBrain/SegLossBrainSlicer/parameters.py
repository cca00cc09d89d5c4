"""The module's parameter node: typed, saved with the scene, bound to the widgets named in the .ui file.

Each field whose name matches a widget's ``SlicerParameterName`` property is kept in sync by Slicer's
``connectGui``. The model selector is filled at run time (its choices change), so the panel writes
``modelKey`` itself. Needs Slicer's parameterNodeWrapper: imported by the module only inside Slicer.
"""
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper

from .cli_protocol import DEVICES
from .i18n import _
from .input_checks import InputProblem, check_input_volume, check_output_spacing


@parameterNodeWrapper
class SegLossBrainParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelKey: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    tta: bool = False
    pialRefinement: bool = True  # the cortex's outer boundary decided again at the input's resolution
    confidence: bool = True
    hemispheres: bool = False
    outputSpacing: float = 0.0  # mm; 0: the input's own grid
    # Outputs, remembered so that a second run updates them instead of piling up new nodes.
    volumesTable: vtkMRMLTableNode
    confidenceVolume: vtkMRMLScalarVolumeNode


def validate(parameters, model_choice, missing_packages=()) -> tuple[bool, str]:
    """(can run, reason or notes) for the Segment button's state and tooltip.

    With engine packages missing the button stays enabled: clicking it is how the user installs them (the
    model list can only be read once they are there).
    """
    try:
        notes = check_input_volume(parameters.inputVolume)
        check_output_spacing(parameters.inputVolume, parameters.outputSpacing)
    except InputProblem as problem:
        return False, str(problem)
    if missing_packages:
        return True, _("Click to install the missing packages ({names}), then segment.").format(
            names=", ".join(missing_packages))
    if model_choice is None:
        return False, _("No model is available: see the message under the model selector.")
    return True, "\n".join(notes) or _("Segment the input volume in the background.")

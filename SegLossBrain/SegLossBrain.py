"""SegLossBrain: 19-structure brain MRI segmentation in 3D Slicer. Wiring only; the work is in SegLossBrainSlicer
(Slicer glue) and SegLossBrainLib (engine, run in a child process, so torch is never imported here)."""
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from SegLossBrainSlicer import sample_data
from SegLossBrainSlicer.i18n import _, translate
from SegLossBrainSlicer.paths import resource_path


class SegLossBrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegLossBrain")
        # Slicer's own context: once translated, this is Slicer's Segmentation folder, not a second one.
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SegLossBrain contributors"]
        self.parent.helpText = _(
            "Segments 19 brain structures (white matter, cortex, ventricles, deep grey nuclei, cerebellum, "
            "brainstem, hippocampus, amygdala, CSF, optic chiasm...) in a 3D brain MRI, in the background. "
            "Results: a segmentation with standard terminology codes, a table of structure volumes in mL and, "
            "optionally, a confidence map with the least confident structures. Cancel leaves the scene unchanged. "
            "Fine-tune adapts the model to your corrected segmentations (as a new version you can activate). "
            "Research use only, not for clinical decisions.")
        self.parent.acknowledgementText = _(
            "The network and its exponential logarithmic loss follow Wong K.C.L., Moradi M., Tang H., "
            "Syeda-Mahmood T., '3D Segmentation with Exponential Logarithmic Loss for Highly Unbalanced Object "
            "Sizes', MICCAI 2018. The generalised Dice loss follows Sudre C.H., Li W., Vercauteren T., Ourselin S., "
            "Cardoso M.J., 'Generalised Dice overlap as a deep learning loss function for highly unbalanced "
            "segmentations', DLMIA 2017.")
        try:  # Slicer looks for the icon beside this file; from a source checkout it is in ../Resources
            import qt

            self.parent.icon = qt.QIcon(resource_path("Icons", "SegLossBrain.png"))
        except (ImportError, AttributeError, FileNotFoundError):
            pass  # no Qt (headless tests) or no resources: Slicer's default icon
        # The demo volume in the Sample Data module, once Slicer has loaded every module (SampleData included).
        sample_data.register_on_startup(getattr(slicer, "app", None))


class SegLossBrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self.finetune_panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from SegLossBrainSlicer.finetune_panel import FinetunePanel
        from SegLossBrainSlicer.panel import SegmentPanel

        uiWidget = slicer.util.loadUI(resource_path("UI", "SegLossBrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegLossBrainLogic()
        self.panel = SegmentPanel(self.ui, self.logic)
        self.finetune_panel = FinetunePanel(self.ui, self.panel)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        if self.panel:
            self.panel.cleanup()
        if self.finetune_panel:
            self.finetune_panel.cleanup()

    def enter(self):
        self.initializeParameterNode()
        self.panel.refresh_models()  # a fine-tune run may have added a model meanwhile
        self.finetune_panel.refresh_versions()

    def exit(self):
        self.panel.set_parameter_node(None)

    def onSceneStartClose(self, caller, event):
        self.panel.on_scene_closing()
        self.finetune_panel.on_scene_closing()
        self.panel.set_parameter_node(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        parameters = self.logic.getParameterNode()
        if not parameters.inputVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume and not volume.IsA("vtkMRMLLabelMapVolumeNode"):
                parameters.inputVolume = volume
        self.panel.set_parameter_node(parameters)


class SegLossBrainLogic(ScriptedLoadableModuleLogic):
    def getParameterNode(self):
        from SegLossBrainSlicer.parameters import SegLossBrainParameterNode

        return SegLossBrainParameterNode(super().getParameterNode())

    def create_run(self, parameters, options, model_sha256=None, command_prefix=None):
        """A SegmentRun for the parameter node's input and outputs (not started)."""
        from SegLossBrainSlicer.segment_run import SegmentRun

        return SegmentRun(slicer.mrmlScene, parameters.inputVolume, options,
                          output_segmentation=parameters.outputSegmentation,
                          volumes_table=parameters.volumesTable,
                          confidence_volume=parameters.confidenceVolume if options.confidence else None,
                          model_sha256=model_sha256, command_prefix=command_prefix)

    def segment(self, volume, model_choice, device="auto", tta=False, confidence=True, hemispheres=False,
                force=False, output_spacing=None, timeout=3600):
        """Blocking segmentation for scripts and the self-test; returns a SegmentResult. ``hemispheres``: left and
        right structures as laterality-coded segments; ``force``: segment even when the engine finds no brain;
        ``output_spacing`` (mm): the labels on an isotropic grid of that spacing covering the volume."""
        from SegLossBrainSlicer.cli_protocol import SegmentOptions
        from SegLossBrainSlicer.segment_run import SegmentRun

        options = SegmentOptions(model_choice.path, device, tta, confidence, hemispheres, force, output_spacing)
        return SegmentRun(slicer.mrmlScene, volume, options, model_sha256=model_choice.sha256).run_blocking(timeout)


class SegLossBrainTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_sample()

    def test_segment_sample(self):
        from SegLossBrainSlicer import dependencies, model_choices

        missing = dependencies.missing_requirements()
        choices, message = model_choices.available_models()
        if missing or not choices:
            self.delayDisplay(_("Skipped: {reason}").format(reason=", ".join(missing) or message))
            return
        volume = sample_data.load_demo_volume()  # through the Sample Data module, as a user would load it
        result = SegLossBrainLogic().segment(volume, choices[0], device="cpu")
        segments = result.segmentation.GetSegmentation()
        self.assertEqual(segments.GetNumberOfSegments(), 19)
        self.assertEqual(segments.GetNthSegment(0).GetName(), "cerebral white matter")
        self.assertEqual(result.volumes_table.GetNumberOfRows(), 19)
        total_ml = sum(row.volume_ml for row in result.volumes)
        self.assertTrue(700 < total_ml < 2500, f"implausible brain volume {total_ml:.0f} mL")
        self.assertGreater(result.volumes[0].volume_ml, 100)  # cerebral white matter
        self.delayDisplay(_("Test passed"))

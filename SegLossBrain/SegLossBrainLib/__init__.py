"""SegLossBrain engine: brain MRI segmentation with the network of Wong et al. (MICCAI 2018).

Plain Python + torch + SimpleITK; never imports Slicer, Qt or VTK. Heavy modules are imported lazily by the
functions that need them, so ``import SegLossBrainLib`` is cheap.
"""
__version__ = "0.1.0"

"""Slicer glue of SegLossBrain: small files, one job each, between the MRML scene and the engine.

Everything here that needs no Qt (MRML conversions, checks, the background-process runner) is tested against
the headless ``slicer-core`` scene. Only ``panel.py`` (widget behaviour), ``parameters.py`` (needs Slicer's
parameterNodeWrapper) and the install dialogs in ``dependencies.py`` need the Slicer application.
Nothing here imports torch: the engine runs in a child process.
"""

"""The translation functions: ``_`` for every string shown to users, ``translate`` for a string that belongs to
another translation context (the module category, which Slicer translates as ``qSlicerAbstractCoreModule``).

Inside Slicer they are Slicer's ``tr`` and ``translate`` (so the strings enter the translation files); in headless
``slicer-core`` (tests) and plain Python they return the text unchanged.
"""
try:
    from slicer.i18n import tr as _  # noqa: F401
    from slicer.i18n import translate  # noqa: F401
except ImportError:  # slicer-core and plain Python have no translation layer

    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text

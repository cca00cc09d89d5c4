"""The translation function ``_`` used for every string shown to users.

Inside Slicer it is Slicer's ``tr`` (so the strings enter the module's translation files); in headless
``slicer-core`` (tests) and plain Python it returns the text unchanged.
"""
try:
    from slicer.i18n import tr as _  # noqa: F401
except ImportError:  # slicer-core and plain Python have no translation layer

    def _(text: str) -> str:
        return text

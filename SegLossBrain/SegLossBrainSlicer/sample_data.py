"""The shipped demo volume in Slicer's Sample Data module, under a "SegLossBrain" category.

The Sample Data module "downloads" a source into Slicer's cache and loads it from there, checking the copy's
checksum. The demo ships with the extension, so its URI is the local file (``file://``, which the module's
downloader, Python's ``urllib``, reads like any URL) and no network is needed. Registration waits for Slicer's
``startupCompleted`` so that the SampleData module is loaded; :func:`register` itself takes the SampleData
logic class and the resources folder, so it runs headless with a stand-in.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

CATEGORY = "SegLossBrain"
SAMPLE_NAME = "SegLossBrainDemoT1"
NODE_NAME = "SegLossBrainDemoT1"
DEMO_FILE = ("Samples", "synthetic_t1_demo.nii.gz")
CACHE_FILE_NAME = "SegLossBrain-synthetic_t1_demo.nii.gz"  # the copy's name in Slicer's shared download cache
THUMBNAIL = ("Icons", "SegLossBrainDemoT1.png")


def sha256_checksum(path: str | Path) -> str:
    """The Sample Data module's checksum format: ``SHA256:<lowercase hex digest>``."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "SHA256:" + digest.hexdigest()


def demo_source(resources: str | Path) -> dict | None:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for the demo volume, or None
    when the resources hold no demo (a build without samples)."""
    resources = Path(resources)
    volume = resources.joinpath(*DEMO_FILE).resolve()
    if not volume.is_file():
        return None
    thumbnail = resources.joinpath(*THUMBNAIL).resolve()
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": volume.as_uri(),  # file:///... (file:///C:/... on Windows)
        "fileNames": CACHE_FILE_NAME,
        "nodeNames": NODE_NAME,
        "thumbnailFileName": str(thumbnail) if thumbnail.is_file() else None,
        "loadFileType": "VolumeFile",
        "checksums": sha256_checksum(volume),
    }


def register(sample_data_logic, resources: str | Path) -> bool:
    """Add the demo to the Sample Data module; ``sample_data_logic``: ``SampleData.SampleDataLogic`` (its
    static registration method; registering the same source twice is a no-op there). False: no demo shipped."""
    source = demo_source(resources)
    if source is None:
        return False
    sample_data_logic.registerCustomSampleDataSource(**source)
    return True


def register_in_slicer() -> bool:
    """Registration inside Slicer; never raises (a missing Sample Data module must not break SegLossBrain)."""
    try:
        import SampleData

        from .paths import resources_dir

        return register(SampleData.SampleDataLogic, resources_dir())
    except Exception as error:  # noqa: BLE001 - the module must load whatever happens here
        logging.warning("SegLossBrain: the demo volume was not added to Sample Data (%s)", error)
        return False


def register_on_startup(app) -> None:
    """Called from the module's constructor: register once Slicer has loaded every module. ``app``:
    ``slicer.app``, None when there is none (headless tests)."""
    if app is not None:
        app.connect("startupCompleted()", register_in_slicer)


def load_demo_volume():
    """The demo as a volume node through the Sample Data module (its checksum checked on the way), for the
    self-test; Slicer's MRHead when no demo is shipped."""
    import SampleData

    if register_in_slicer():
        return SampleData.SampleDataLogic().downloadSample(SAMPLE_NAME)
    return SampleData.downloadSample("MRHead")

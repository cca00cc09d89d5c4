"""Make the Sample Data module's thumbnail of the demo volume: one axial slice, 8-bit grey, a few tens of KB.

    python bench/figures/make_sample_thumbnail.py Resources/Samples/synthetic_t1_demo.nii.gz Resources/Icons/SegLossBrainDemoT1.png
"""
import sys

import numpy as np
import SimpleITK as sitk
from PIL import Image

MAX_BYTES = 30_000


def main(volume_path: str, png_path: str, height: int = 200) -> None:
    volume = sitk.DICOMOrient(sitk.ReadImage(volume_path), "LPS")  # rows anterior->posterior, columns right->left
    array = sitk.GetArrayFromImage(volume).astype(np.float32)
    axial = array[array.shape[0] // 2 + 10]  # just above the mid-axial plane: ventricles and cortex
    grey = np.clip(axial / max(float(np.percentile(array, 99.5)), 1e-6) * 255, 0, 255).astype(np.uint8)
    image = Image.fromarray(grey, mode="L")
    image = image.resize((round(image.width * height / image.height), height), Image.LANCZOS)
    image.save(png_path, optimize=True)
    size = len(open(png_path, "rb").read())
    print(png_path, image.size, size, "bytes")
    if size > MAX_BYTES:
        raise SystemExit(f"{png_path} is {size} bytes, more than {MAX_BYTES}: lower the height")


if __name__ == "__main__":
    main(*sys.argv[1:3])

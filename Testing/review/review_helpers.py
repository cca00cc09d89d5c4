"""Shared by the review app's browser tests: the app as a subprocess (``seglossbrain review``) on a free port, headless
Chromium (Debian's ``chromium`` + ``chromium-driver``, nothing downloaded) driven by Selenium, and a small case
cut from the shipped demo volume so that every test stays quick."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SAMPLES = ROOT / "Resources" / "Samples"
# (x/i, y/j, z/k) start and size of the crop: 81 x 81 x 61 voxels of 1 mm, odd so that a slice view's centre is a
# voxel's centre; the axial slice through the middle (k = 30) holds both hippocampi, its centre is ventral DC.
CROP_START, CROP_SIZE = (53, 70, 45), (81, 81, 61)
STARTUP_SECONDS = 120


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    """(image path, labels path, labels array (k, j, i)) of the crop, written as NIfTI."""
    folder = tmp_path_factory.mktemp("case")
    paths = []
    for name in ("synthetic_t1_demo", "synthetic_t1_demo_labels"):
        image = sitk.ReadImage(str(SAMPLES / f"{name}.nii.gz"))
        crop = sitk.RegionOfInterest(image, CROP_SIZE, CROP_START)
        path = folder / f"{'case' if name.endswith('demo') else 'case_labels'}.nii.gz"
        sitk.WriteImage(crop, str(path))
        paths.append(path)
    return paths[0], paths[1], sitk.GetArrayFromImage(sitk.ReadImage(str(paths[1])))


def review_command(*args) -> list[str]:
    return [sys.executable, "-m", "SegLossBrainLib.cli", "review", *map(str, args)]


class ReviewServer:
    def __init__(self, args, env, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(review_command(*args, "--port", self.port), stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"review exited {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"review did not answer on {self.url}:\n{self.output()[-3000:]}")
            time.sleep(0.5)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def review_env(tmp: Path) -> dict:
    env = dict(os.environ, SEGLOSSBRAIN_MODEL_STORE=str(tmp / "store"), SEGLOSSBRAIN_PAIRS=str(tmp / "default-pairs"))
    env.pop("DISPLAY", None)
    return env


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,900", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(predicate, timeout: float = 60.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # the page is still building: try again
            last_error = error
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} ({last_error})")


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def view_images(driver) -> list:
    """The views' images (the remote-controlled areas), largest first: in the layout used, the axial view."""
    from selenium.webdriver.common.by import By

    images = [e for e in driver.find_elements(By.CSS_SELECTOR, "img") if e.size["width"] > 50]
    return sorted(images, key=lambda e: -e.size["width"] * e.size["height"])


def three_d_view(driver):
    """The 3D view's image: in the app's layout ("Axial Primary") the top one of the three beside the axial view."""
    return min(view_images(driver)[1:4], key=lambda e: e.location["y"])


def element_pixels(element) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).astype(np.int32)


def settled_pixels(element, timeout: float = 30.0) -> np.ndarray:
    """The element's pixels once two screenshots a second apart agree (the server has finished rendering)."""
    previous = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = element_pixels(element)
        if previous is not None and current.shape == previous.shape and np.array_equal(current, previous) \
                and current.std() > 5:
            return current
        previous = current
        time.sleep(1.0)
    raise AssertionError("the view kept changing (or stayed blank)")


def voxel_to_pixel(i, j, shape_px, size_ij):
    """Where the axial view, fitted to the slice, draws voxel (i, j): Slicer's fit shows the whole slice with the
    limiting side filling the view, centred; screen right is the patient's left (+i here), down is posterior
    (+j here: the crop's axes are LPS-aligned)."""
    height, width = shape_px[:2]
    mm_per_px = max(size_ij[0] / width, size_ij[1] / height)
    centre_i, centre_j = (size_ij[0] - 1) / 2, (size_ij[1] - 1) / 2
    return (width / 2 + (np.asarray(i) - centre_i) / mm_per_px, height / 2 + (np.asarray(j) - centre_j) / mm_per_px)


def at_voxels(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The axial view's pixels at the centres of the slice's voxels in ``mask`` (all of them on screen)."""
    j, i = np.nonzero(mask)
    x, y = voxel_to_pixel(i, j, pixels.shape, (mask.shape[1], mask.shape[0]))
    assert ((x >= 0) & (x < pixels.shape[1]) & (y >= 0) & (y < pixels.shape[0])).all(), "the slice is off screen"
    return pixels[y.astype(int), x.astype(int)]


def chroma(rgb) -> np.ndarray:
    """Colour without its grey part: a segment's fill blended over a grey scan keeps its colour's direction."""
    rgb = np.asarray(rgb, float)
    return rgb - rgb.mean(axis=-1, keepdims=True)


def nearest_structure(pixels: np.ndarray, min_chroma: float = 12.0) -> np.ndarray:
    """Per pixel, the structure whose colour direction it has (0: none, too grey to tell)."""
    from SegLossBrainLib.labels import load_label_table

    table = load_label_table()
    colours = chroma([s.color for s in table.structures[1:]])
    norms = np.linalg.norm(colours, axis=1)
    usable = norms > 30  # white/grey structures (white matter, CSF) have no colour direction to match
    c = chroma(pixels)
    magnitude = np.linalg.norm(c, axis=-1)
    cosine = (c @ (colours[usable] / norms[usable, None]).T) / np.maximum(magnitude[..., None], 1e-6)
    best = np.array([s.index for s in table.structures[1:]])[usable][cosine.argmax(axis=-1)]
    return np.where(magnitude >= min_chroma, best, 0)


def open_case_page(driver, url: str):
    """Load the page, wait for the case title and the three slice views, fit the views to the case, settle."""
    driver.get(url)
    wait_for(lambda: "case" in text_of(driver, "case-title"), what="the case title")
    wait_for(lambda: len(view_images(driver)) >= 3, what="the views")
    click_id(driver, "fit-views")
    time.sleep(1.0)
    return driver


def click_id(driver, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def volume_table(driver) -> dict[str, tuple[float, str]]:
    """The page's volume table: {structure: (mL as shown, mean confidence as shown or "")}."""
    rows = driver.execute_script("return [...document.querySelectorAll('#volume-table tr')].map("
                                 "r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()));")
    return {cells[0]: (float(cells[1]), cells[2]) for cells in rows}


def segment_with_cli(image: Path, out: Path, env: dict, model: str | None = None) -> dict:
    """``seglossbrain segment`` run directly on ``image`` as the page segments it (fp32 on the CPU, forced: the
    small case is no whole head): {"labels", "confidence": arrays (k, j, i), "volumes": {structure: mL}}."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "SegLossBrainLib.cli", "segment", str(image), str(out / "labels.nii.gz"),
               "--confidence", str(out / "confidence.nii.gz"), "--volumes", str(out / "volumes.csv"),
               "--precision", "fp32", "--device", "cpu", "--force"] + (["--model", model] if model else [])
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    with open(out / "volumes.csv", newline="") as handle:
        volumes = {row["structure"]: float(row["volume_ml"]) for row in csv.DictReader(handle)}
    read = lambda name: sitk.GetArrayFromImage(sitk.ReadImage(str(out / name)))  # noqa: E731
    return {"labels": read("labels.nii.gz"), "confidence": read("confidence.nii.gz"), "volumes": volumes}

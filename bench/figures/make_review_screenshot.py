"""docs/images/review_page.png: the ``seglossbrain review`` page in headless Chromium (Debian's chromium +
chromium-driver, driven by Selenium), on the shipped synthetic demo volume, segmented by the page with the shipped
model (so that the volume table shows each structure's mean confidence and the confidence overlay can be switched
on).

    python bench/figures/make_review_screenshot.py [--output docs/images/review_page.png]

Starts the app as a subprocess on a free port (pairs folder and model store in a temporary folder, so nothing of
the user's is touched), fits the views, centres them on the hippocampus (a click in the volume table) and saves
a 1600 x 900 screenshot of the page. Prints the browser's version.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "Resources" / "Samples"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "review_page.png"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = dict(os.environ, SEGLOSSBRAIN_MODEL_STORE=f"{tmp}/store", SEGLOSSBRAIN_PAIRS=f"{tmp}/pairs")
        server = subprocess.Popen([sys.executable, "-m", "SegLossBrainLib.cli", "review",
                                   str(SAMPLES / "synthetic_t1_demo.nii.gz"), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1600,900", "--force-device-scale-factor=1"):
            options.add_argument(argument)
        driver = None
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None:
                        raise SystemExit(f"review exited with {server.returncode}")
                    time.sleep(0.5)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            driver.get(f"http://127.0.0.1:{port}/")
            time.sleep(8)
            driver.find_element(By.ID, "fit-views").click()
            time.sleep(2)
            row = driver.find_element(By.XPATH, "//table[@id='volume-table']//tr[contains(., 'hippocampus')]")
            row.click()
            time.sleep(4)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.output)
            print(f"{args.output} (Chromium {driver.capabilities.get('browserVersion')})")
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

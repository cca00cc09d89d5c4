"""A ``batch`` results folder in the page: its cases listed with the QC-flagged ones first (most flags first),
failed cases last, and a click opens a case."""
from __future__ import annotations

import csv
import shutil

import pytest
from review_helpers import ReviewServer, browser, review_env, small_case, text_of, wait_for  # noqa: F401

from SegLossBrainReview.cases import results_folder_cases, split_qc

COLUMNS = ["case_id", "input", "status", "reason", "qc", "seconds", "model", "model_sha256", "labels", "settings",
           "finished"]
QC = {"clean": "", "two_flags": "hippocampus: volume 0.100 % of ICV, outside 0.2-0.4 %; thalamus: mean confidence 0.61",
      "one_flag": "field of view cuts the brain at the top"}


@pytest.fixture(scope="module")
def results(small_case, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("results")
    image, labels, _ = small_case
    rows = []
    for case_id, qc in QC.items():
        shutil.copy(labels, folder / f"{case_id}_labels.nii.gz")
        rows.append({"case_id": case_id, "input": str(image), "status": "ok", "reason": "", "qc": qc,
                     "model": "wong2018-explog-fs", "labels": f"{case_id}_labels.nii.gz", "finished": "2026-01-01"})
    rows.append({"case_id": "broken", "input": str(image), "status": "error", "reason": "no brain found",
                 "qc": "", "model": "wong2018-explog-fs", "labels": "", "finished": "2026-01-01"})
    with open(folder / "volumes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_qc_cell_splits_into_structures_and_warnings():
    assert split_qc(QC["two_flags"]) == ["hippocampus: volume 0.100 % of ICV, outside 0.2-0.4 %",
                                         "thalamus: mean confidence 0.61"]
    assert split_qc("thalamus: volume 1 % of ICV; mean confidence 0.5") == [
        "thalamus: volume 1 % of ICV; mean confidence 0.5"]
    assert split_qc("") == []


def test_cases_sorted_by_qc_flags(results):
    assert [c.case_id for c in results_folder_cases(results)] == ["two_flags", "one_flag", "clean", "broken"]


def test_page_lists_flagged_cases_first_and_opens_one(results, browser, tmp_path_factory):  # noqa: F811
    from selenium.webdriver.common.by import By

    tmp = tmp_path_factory.mktemp("folder-review")
    server = ReviewServer([results, "--pairs-dir", tmp / "pairs"], review_env(tmp), tmp / "review.log")
    try:
        browser.get(server.url)
        wait_for(lambda: text_of(browser, "case-title").endswith("two_flags"), what="the first case")
        ids = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#case-list .case-id")]
        assert ids == ["two_flags", "one_flag", "clean", "broken"]
        table = text_of(browser, "volume-table").splitlines()
        # the flagged rows first (in the label table's order), marked QC; the others not
        assert [row.split()[0] for row in table[:2]] == ["thalamus", "hippocampus"]
        assert table[0].endswith("QC") and table[1].endswith("QC") and not any(r.endswith("QC") for r in table[2:])
        browser.find_elements(By.CSS_SELECTOR, "#case-list .v-list-item")[2].click()
        wait_for(lambda: text_of(browser, "case-title").endswith("clean"), what="the case clicked")
        wait_for(lambda: not any(r.endswith("QC") for r in text_of(browser, "volume-table").splitlines()),
                 what="no QC mark on a case batch did not flag")
        browser.find_elements(By.CSS_SELECTOR, "#case-list .v-list-item")[1].click()
        wait_for(lambda: "field of view" in text_of(browser, "qc-warnings"), what="the case's QC warning")
    finally:
        server.stop()

"""Save correction, Fine-tune and Activate from the page: the saved pair is taken by ``seglossbrain finetune``
(run by the page as a child process, tiny settings passed with --finetune-option), a new version appears in the
model store with progress shown and its validation curve plotted, and Activate makes it the default and segments
the open case again with it: the page then shows what ``seglossbrain segment --model <new version>`` gives."""
from __future__ import annotations

import json

import pytest
from review_helpers import (ReviewServer, browser, click_id, review_env, segment_with_cli, small_case,  # noqa: F401
                            text_of, volume_table, wait_for)

TINY = ["--finetune-minutes", "0", "--finetune-option=--steps=3", "--finetune-option=--patch-size=32",
        "--finetune-option=--validate-every=1", "--finetune-option=--device=cpu"]


@pytest.fixture(scope="module")
def server(small_case, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("tune")
    image, labels, _ = small_case
    running = ReviewServer([image, "--labels", labels, "--pairs-dir", tmp / "pairs", *TINY], review_env(tmp),
                           tmp / "review.log")
    running.tmp = tmp
    yield running
    running.stop()


def test_finetune_from_the_page_and_activate(server, browser, small_case):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url)
    wait_for(lambda: "case" in text_of(browser, "case-title"), what="the case title")
    assert browser.find_element(By.ID, "ft-start").get_attribute("disabled") is not None  # no pair saved yet
    click_id(browser, "save-correction")
    wait_for(lambda: "Saved" in text_of(browser, "save-status"), what="Save correction")
    wait_for(lambda: "(1 in" in text_of(browser, "pairs-info"), what="the pair count")
    name_field = browser.find_element(By.CSS_SELECTOR, "#ft-name")
    name_field.send_keys(Keys.CONTROL, "a")
    name_field.send_keys("page-tiny")
    click_id(browser, "ft-start")
    wait_for(lambda: "page-tiny" in text_of(browser, "ft-status") and
             browser.find_element(By.ID, "ft-activate").get_attribute("disabled") is None,
             timeout=300, what=f"the fine-tune to finish:\n{server.output()[-2000:]}")
    store = server.tmp / "store"
    assert (store / "page-tiny.safetensors").is_file()
    metadata = json.loads((store / "page-tiny.json").read_text())
    assert 1 <= metadata["steps"] <= 3  # the step of the best validation, whose weights are kept
    # the validation curve: one point per validation listed (the base's at step 0, then the run's), higher Dice
    # drawn higher
    listed = [line for line in text_of(browser, "ft-curve").splitlines() if line.startswith("validation Dice")]
    dice = [float(line.rsplit(":", 1)[1]) for line in listed]
    points = browser.find_elements(By.CSS_SELECTOR, "#ft-curve-plot svg circle.validation-point")
    assert len(listed) >= 3 and len(points) == len(listed)
    assert [float(p.get_attribute("data-dice")) for p in points] == pytest.approx(dice, abs=6e-4)
    heights = [float(p.get_attribute("cy")) for p in points]
    for a in range(len(dice)):
        for b in range(len(dice)):
            if dice[a] > dice[b] + 1e-3:
                assert heights[a] < heights[b]
    assert browser.find_element(By.ID, "ft-curve-plot").is_displayed()

    labels_before = volume_table(browser)
    assert "labels: from file" in text_of(browser, "model-text")
    click_id(browser, "ft-activate")
    wait_for(lambda: text_of(browser, "activate-status"), what="Activate's answer")
    if "Not activated" in text_of(browser, "activate-status"):  # scored below its base: the store asks first
        click_id(browser, "ft-activate-force")
    wait_for(lambda: "is now the default" in text_of(browser, "activate-status"), what="activation")
    assert json.loads((store / "active.json").read_text())["name"] == "page-tiny"
    assert "active model: page-tiny" in text_of(browser, "model-text")
    # the case segmented again with the new version, as the command does it
    wait_for(lambda: "labels: page-tiny" in text_of(browser, "model-text"), timeout=120,
             what=f"the case segmented with page-tiny:\n{server.output()[-2000:]}")
    expected = segment_with_cli(small_case[0], server.tmp / "cli", review_env(server.tmp), model="page-tiny")
    shown = volume_table(browser)
    assert shown != labels_before
    for name, ml in expected["volumes"].items():
        assert shown[name][0] == pytest.approx(ml, abs=0.006), name
    assert all(confidence for _, confidence in shown.values() if _ > 0), "mean confidence shown once segmented"

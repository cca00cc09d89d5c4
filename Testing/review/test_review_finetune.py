"""Save correction, Fine-tune and Activate from the page: the saved pair is taken by ``seglossbrain finetune``
(run by the page as a child process, tiny settings passed with --finetune-option), a new version appears in the
model store with progress shown, and Activate makes it the default."""
from __future__ import annotations

import json

import pytest
from review_helpers import ReviewServer, browser, click_id, review_env, small_case, text_of, wait_for  # noqa: F401

TINY = ["--finetune-minutes", "0", "--finetune-option=--steps=2", "--finetune-option=--patch-size=32",
        "--finetune-option=--validations=1", "--finetune-option=--device=cpu"]


@pytest.fixture(scope="module")
def server(small_case, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("tune")
    image, labels, _ = small_case
    running = ReviewServer([image, "--labels", labels, "--pairs-dir", tmp / "pairs", *TINY], review_env(tmp),
                           tmp / "review.log")
    running.tmp = tmp
    yield running
    running.stop()


def test_finetune_from_the_page_and_activate(server, browser):  # noqa: F811
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
    assert metadata["steps"] == 2
    assert "validation Dice" in text_of(browser, "ft-curve")
    click_id(browser, "ft-activate")
    wait_for(lambda: text_of(browser, "activate-status"), what="Activate's answer")
    if "Not activated" in text_of(browser, "activate-status"):  # scored below its base: the store asks first
        click_id(browser, "ft-activate-force")
    wait_for(lambda: "is now the default" in text_of(browser, "activate-status"), what="activation")
    assert json.loads((store / "active.json").read_text())["name"] == "page-tiny"
    assert "active model: page-tiny" in text_of(browser, "model-text")

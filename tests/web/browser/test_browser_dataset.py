"""The Dataset page's own controls in a real headless Chromium: a batch tag edit, ticked images only,
preprocessing into the prepared sibling, and a refused name shown in the banner (the whole-flow test
covers create, upload and a one-by-one caption edit)."""

from __future__ import annotations

import shutil

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from ldm.benchmark.web_server import REPO

from ..conftest import PHOTOS_ONLY
from .drive import banner, by_id, click, console_errors, until

CONCEPT = "browser-stars"


def _notice(driver) -> str:
    return banner(driver, "notice")


def _captions(driver) -> list[str]:
    return [box.get_attribute("value") for box in driver.find_elements(By.CSS_SELECTOR, "#dataset-grid textarea")]


def test_tag_edits_preprocess_and_a_refused_name(server, browser, screenshot):
    shutil.copytree(
        REPO / "training_data" / "toy-purple-star", server.root / "training_data" / CONCEPT, ignore=PHOTOS_ONLY
    )
    browser.get(f"{server.url}/dataset?concept={CONCEPT}")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dataset-grid figure")) == 5, message="grid")

    by_id(browser, "tags-tag").send_keys("purple star")
    Select(by_id(browser, "tags-where")).select_by_value("front")
    click(browser, "tags-apply")
    until(browser, lambda d: "add: 5 captions changed" in _notice(d), message="the add notice")
    until(browser, lambda d: _captions(d) == ["purple star"] * 5, message="captions after add")

    Select(by_id(browser, "tags-action")).select_by_value("replace")
    until(browser, lambda d: d.find_element(By.ID, "tags-new").is_displayed(), message="the 'with' field")
    assert not by_id(browser, "tags-where").is_displayed()  # front/back only matters when adding
    by_id(browser, "tags-new").send_keys("violet star")
    click(browser, "image-pick-1")
    click(browser, "tags-selected-only")
    click(browser, "tags-apply")
    until(browser, lambda d: "replace: 1 captions changed" in _notice(d), message="the replace notice")
    expected = ["purple star", "violet star", "purple star", "purple star", "purple star"]
    until(browser, lambda d: _captions(d) == expected, message="only the ticked caption replaced")
    assert (server.root / "training_data" / CONCEPT / "star-purple-001.txt").read_text().strip() == "violet star"

    size = by_id(browser, "prep-size")
    size.clear()
    size.send_keys("32")
    click(browser, "prep-flip")
    click(browser, "prep-run")
    until(browser, lambda d: f"wrote 10 prepared images to {CONCEPT}-prepared" in _notice(d), message="prepared")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dataset-grid figure")) == 10, message="grid")
    assert by_id(browser, "concept-select").get_attribute("value") == f"{CONCEPT}-prepared"
    assert "violet star" in _captions(browser)  # captions travel with the prepared images
    screenshot("dataset-prepared")
    assert console_errors(browser) == []

    by_id(browser, "concept-name").send_keys("../outside")
    click(browser, "concept-create")
    until(browser, lambda d: "not a plain name" in banner(d), message="the refused name's error")
    assert not (server.root / "outside").exists()

"""Fixtures for the real-browser tests: the server as a user starts it, and a headless Chromium.

Without Debian's chromium + chromium-driver (or TI_CHROMIUM / TI_CHROMEDRIVER naming others) the tests
skip and say what to install. Screenshots go to $TI_ARTIFACTS/screenshots (default: artifacts/ in the
repository, git-ignored)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ldm.benchmark.web_server import REPO, WebServer, toy_project

WINDOW = (1280, 1000)
MAX_SHOT_HEIGHT = 4000  # a full-page screenshot of a long gallery stops here
NO_BROWSER = (
    "no chromium/chromedriver: install Debian's chromium chromium-driver (apt-get install -y chromium chromium-driver)"
)


def _browser_paths() -> tuple[str, str] | None:
    chromium = os.environ.get("TI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("TI_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver or not Path(chromium).exists() or not Path(driver).exists():
        return None
    return chromium, driver


def artifacts_dir() -> Path:
    return Path(os.environ.get("TI_ARTIFACTS") or REPO / "artifacts")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Selenium through the system chromedriver (never downloaded)."""
    paths = _browser_paths()
    if paths is None:
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    # root in a container has no sandbox and a small /dev/shm
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size={},{}".format(*WINDOW),
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors are test failures
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    driver.set_page_load_timeout(300)  # a hang guard: the server answers slowly on a loaded machine
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real server (`scripts/invoke.py --web --port N`) serving a fresh toy project folder."""
    if _browser_paths() is None:
        pytest.skip(NO_BROWSER)  # before the seconds of starting a server nobody will visit
    root = toy_project(tmp_path_factory.mktemp("web-project"))
    with WebServer(root) as live:
        yield live


@pytest.fixture
def screenshot(browser):
    """screenshot(name): save the whole page (not only the window) as <artifacts>/screenshots/<name>.png."""
    folder = artifacts_dir() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = folder / f"{name}.png"
        width, height = WINDOW
        page_height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(max(height, page_height), MAX_SHOT_HEIGHT))
        try:
            assert browser.save_screenshot(str(path)), f"could not write {path}"
        finally:
            browser.set_window_size(width, height)
        return path

    return take

"""Small Selenium helpers for the browser tests: wait for a condition, read the banner, JS errors."""

from __future__ import annotations

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30.0  # a hang guard for page actions, not a speed requirement


def by_id(driver, element_id: str, timeout: float = WAIT):
    """The element with this id once it is in the page."""
    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.ID, element_id)))


def visible(driver, element_id: str, timeout: float = WAIT):
    return WebDriverWait(driver, timeout).until(EC.visibility_of_element_located((By.ID, element_id)))


def click(driver, element_id: str, timeout: float = WAIT) -> None:
    WebDriverWait(driver, timeout).until(EC.element_to_be_clickable((By.ID, element_id))).click()


def until(driver, condition, timeout: float = WAIT, message: str = ""):
    """Wait until condition(driver) is truthy and return it; on timeout, fail saying what never came and
    what the page's banners said then."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        pass
    raise AssertionError(
        f"{message or 'the page never got there'} (error: {banner(driver)!r}, notice: {banner(driver, 'notice')!r})"
    )


def banner(driver, element_id: str = "error") -> str:
    """The text of the page's error (or notice) banner, '' while it is hidden."""
    box = driver.find_element(By.ID, element_id)
    return box.text if box.is_displayed() else ""


def console_errors(driver) -> list[str]:
    """SEVERE browser-console entries since the last call (JS exceptions, failed loads), minus the favicon."""
    entries = driver.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]

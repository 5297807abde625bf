"""Every page, in a real headless Chromium against the real server: it renders, its navigation works,
no script fails, and a screenshot of it lands in the artifacts folder."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from ldm.web.pages import PAGES

from .drive import by_id, click, console_errors, until


def test_each_page_renders_without_script_errors(server, browser, screenshot):
    browser.get(server.url + "/")
    until(browser, lambda d: d.current_url.endswith("/generate"), message="/ did not lead to /generate")
    for name, title in PAGES:
        browser.get(f"{server.url}/{name}")
        assert by_id(browser, f"nav-{name}").get_attribute("aria-current") == "page"
        assert title in browser.title
        assert browser.find_element(By.TAG_NAME, "h1").text.strip()
        assert not browser.find_element(By.ID, "error").is_displayed()
        assert console_errors(browser) == [], f"/{name} logged script errors"
        path = screenshot(f"page-{name}")
        assert path.stat().st_size > 1000


def test_navigation_links_lead_to_each_page(server, browser):
    browser.get(server.url + "/dataset")
    for name, _title in reversed(PAGES):
        click(browser, f"nav-{name}")
        until(browser, lambda d, name=name: d.current_url.endswith(f"/{name}"), message=f"nav-{name} went nowhere")
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-page") == name

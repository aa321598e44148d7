"""A real browser for the dashboard tests: Debian's ``chromium`` headless, driven through
``chromium-driver`` by selenium.

Selenium blocks, and the router under test runs on the test's own trio loop, so every call
into the browser goes through :meth:`Browser.call` (a worker thread): the router keeps
serving while the browser waits for it.

Where chromium, its driver or selenium is missing the tests are skipped, saying so, unless
``LLM_ROUTER_REQUIRE_BROWSER=1`` (set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

__all__ = ["CSS", "ID", "Browser", "connect", "need_browser", "open_browser",
           "screenshots_dir"]

# selenium's locator strategies (``By.CSS_SELECTOR``, ``By.ID``): plain WebDriver strings, so
# a test module imports nothing of selenium and is skipped, not broken, where it is missing.
CSS = "css selector"
ID = "id"

T = TypeVar("T")

#: How long a wait for the page may take before the test fails: generous, for a busy machine
#: (a wait ends as soon as its condition holds).
WAIT_SEC = 30.0


def _missing(message: str) -> None:
    if os.environ.get("LLM_ROUTER_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _binaries() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _missing("chromium and chromium-driver are not installed "
                 "(apt-get install chromium chromium-driver); the dashboard tests need them")
    assert browser is not None and driver is not None
    return browser, driver


def need_browser() -> None:
    """Skip (or fail, see the module docstring) unless chromium, its driver and selenium are
    installed. Call it first: a skip raised later, inside the router's nursery, loses its
    message."""
    _binaries()
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install selenium); "
                 "the dashboard tests drive chromium with it")


def screenshots_dir() -> Path | None:
    """Where to save screenshots (``LLM_ROUTER_SCREENSHOTS``), if anywhere."""
    folder = os.environ.get("LLM_ROUTER_SCREENSHOTS")
    return Path(folder) if folder else None


class Browser:
    """One headless chromium window."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args))

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def wait_for(self, condition: Callable[[Any], T], what: str) -> T:
        """``condition(driver)``'s first truthy value (checked every 100 ms). The live page
        re-renders its panels as events arrive, so an element found may be replaced before
        it is read: that check is made again at the next poll, as one that found nothing."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(self.driver, WAIT_SEC, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException))
        return await self.call(wait.until, condition, f"the dashboard never showed {what}")

    async def text(self, selector: str) -> str:
        """The text of the element ``selector`` finds, read again if the page replaced the
        element between finding and reading it."""
        from selenium.common.exceptions import StaleElementReferenceException

        def read() -> str:
            for _ in range(4):
                try:
                    return str(self.driver.find_element(CSS, selector).text)
                except StaleElementReferenceException:
                    continue
            return str(self.driver.find_element(CSS, selector).text)

        return await self.call(read)

    async def script(self, source: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, source, *args)

    async def console_errors(self) -> list[dict[str, Any]]:
        """The console's errors since the last call (page errors, failed loads, CSP
        refusals all land here)."""
        entries = await self.call(self.driver.get_log, "browser")
        return [e for e in entries if e["level"] == "SEVERE"]

    async def screenshot(self, path: Path) -> None:
        await self.call(self.driver.save_screenshot, str(path))


async def connect(browser: Browser, url: str, key: str) -> None:
    """Open the dashboard at ``url`` and give it ``key`` through its prompt, as a person
    would."""

    await browser.get(url + "/ui")
    await browser.wait_for(
        lambda d: d.find_element(ID, "login").get_attribute("open") is not None,
        "its key prompt")

    def enter_key() -> None:
        browser.driver.find_element(ID, "key").send_keys(key)
        browser.driver.find_element(ID, "connect").click()

    await browser.call(enter_key)


@asynccontextmanager
async def open_browser(*, width: int = 1440, height: int = 1000) -> AsyncIterator[Browser]:
    """A headless chromium for the block, closed after it."""
    need_browser()
    browser, driver_path = _binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path)
    driver = await trio.to_thread.run_sync(
        lambda: webdriver.Chrome(options=options, service=service))
    try:
        yield Browser(driver)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(driver.quit)

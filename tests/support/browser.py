"""A real headless Chromium (Debian's chromium, driven through Debian's chromium-driver by selenium) for
the dashboard's tests and screenshots. Nothing is downloaded: the browser and its driver are the
system's, named by path, so selenium's own driver manager never runs."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from sandbox.prereqs import MissingPrerequisite

T = TypeVar("T")
BROWSER = ("chromium", "chromium")  # (binary, Debian package)
DRIVER = ("chromedriver", "chromium-driver")


def _find(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise MissingPrerequisite(f"missing {binary} (Debian: apt-get install {package}; or bash scripts/dev.sh setup)")
    return found


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _find(*BROWSER)
    profile = Path(tempfile.mkdtemp(prefix="tf-chromium-"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--metrics-recording-only", "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_find(*DRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: WebDriver, probe: Callable[[WebDriver], T], what: str, timeout: float = 30.0) -> T:
    """Poll `probe` (elements going stale between polls are retried) until it gives something truthy."""
    last: list[object] = []

    def attempt(d: WebDriver) -> T | bool:
        try:
            value = probe(d)
        except (StaleElementReferenceException, WebDriverException) as exc:
            last[:] = [exc]
            return False
        last[:] = [value]
        return value

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(attempt)  # type: ignore[return-value]
    except WebDriverException as exc:
        status = text(driver, "#live") + " | " + text(driver, "#content")[:600]
        raise AssertionError(f"{what} not seen within {timeout:g}s on {driver.current_url} (page: {status!r}); "
                             f"last: {last}") from exc


def click(driver: WebDriver, css: str, what: str) -> None:
    """Click the first element matching `css`, finding it again if the page redrew it meanwhile."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    until(driver, clicked, what)


def text(driver: WebDriver, css: str) -> str:
    """The visible text of the first element matching `css`, or "" when there is none."""
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def shoot(driver: WebDriver, directory: Path | None, name: str) -> None:
    """Save a PNG of the page when screenshots were asked for (tests.support.screenshots)."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    size = driver.get_window_size()
    driver.set_window_size(size["width"], max(size["height"], min(int(height) + 40, 2400)))
    driver.save_screenshot(str(directory / f"{name}.png"))
    driver.set_window_size(size["width"], size["height"])

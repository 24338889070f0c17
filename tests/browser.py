"""Headless Chromium for the tests of the web view and the HTML reports: Debian's ``chromium`` driven through
``chromium-driver`` by Selenium. Never a browser downloaded at run time (the machine has no network for that), and
the flags that keep a closed network from making Chromium wait for services it cannot reach."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Screenshots the browser tests keep (git-ignored); the run's summary prints the folder.
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TAKEN: list[Path] = []  # screenshots saved in this test session
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars")


def missing() -> str | None:
    """Why the browser tests cannot run here (naming the package to install), or None."""
    if not Path(CHROMIUM).is_file():
        return "needs Chromium (Debian package chromium; .ci/run installs it)"
    if not Path(DRIVER).is_file():
        return "needs ChromeDriver (Debian package chromium-driver; .ci/run installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install 'm2s2l-edge[dev]')"
    return None


@contextlib.contextmanager
def chromium(width: int = 1440, height: int = 1000, binary: str | None = None):
    """A fresh headless Chromium (its own profile folder) as a Selenium driver; ``binary``: another program to start
    as the browser (benchmarks/bench_ui.py starts it through ``nice``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="m2s2l-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary or CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            driver.set_page_load_timeout(30)
            yield driver
        finally:
            driver.quit()


def screenshot(driver, name: str) -> Path:
    """Save the page as ``test-artifacts/<name>.png``; returns the path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    TAKEN.append(path)
    return path


def wait_until(driver, script: str, timeout: float, what: str, *args):
    """Poll a JavaScript expression (``return ...``) until it is truthy; its value, or an AssertionError naming what
    was awaited."""
    import time

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")

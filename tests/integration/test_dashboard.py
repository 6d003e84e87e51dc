"""The web dashboard in a real headless Chromium, against a real `tinyfleet controller` process on the
real broker and registry, with EMULATED devices: an operator logs in with the API token, sees devices
come online, looks at a device and the releases, starts a rollout and watches it finish, starts another
and aborts it from the page, and sees a device whose app holds its update lock: locked on its page (holder,
since, the release's max wait) and in the rollout (counted pending, shown locked). A wrong token is
refused; what a device reports is shown, never run.

With TINYFLEET_SCREENSHOTS=DIR (python -m tests.support.screenshots) each page is saved as DIR/NAME.png.
The tests run in file order and share one browser, one controller and one fleet."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.support.browser import chromium, click, shoot, text, until
from tests.support.emulated_device import EmulatedDevice
from tests.support.fleet import HEARTBEAT, ControllerProcess, push_demo_image
from tests.support.wait import eventually
from tinyfleet.controller.client import ApiClient
from tinyfleet.protocol import AppStatus, LockHeld, Phase

REPO = "it/dashboard"
GROUP = "dash"
PLATFORMS = ("linux/arm64", "linux/arm/v7", "linux/arm/v6")
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
SHOTS = Path(os.environ["TINYFLEET_SCREENSHOTS"]) if os.environ.get("TINYFLEET_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, mosquitto) -> Iterator[ControllerProcess]:  # type: ignore[no-untyped-def]
    proc = ControllerProcess(tmp_path_factory.mktemp("dash-ctl"), mosquitto.url).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(ctl: ControllerProcess) -> ApiClient:
    return ctl.client()


@pytest.fixture(scope="module")
def devices(mosquitto) -> Iterator[list[EmulatedDevice]]:  # type: ignore[no-untyped-def]
    """Not started: the test that watches them come online starts them."""
    fleet = [EmulatedDevice(mosquitto.port, f"{GROUP}-{i}", platform=p, heartbeat=HEARTBEAT)
             for i, p in enumerate(PLATFORMS)]
    yield fleet
    for device in fleet:
        if device._worker.is_alive():
            device.stop()


@pytest.fixture(scope="module")
def images(registry, demo_binaries) -> list[str]:  # type: ignore[no-untyped-def]
    """Pushed, not yet released: a release is checked against the platforms of the devices online."""
    return [push_demo_image(registry.host, REPO, tag, demo_binaries, version=tag[0]) for tag in ("1.0", "2.0")]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def log_in(browser: WebDriver, ctl: ControllerProcess, token: str) -> None:
    browser.get(ctl.url + "/")
    until(browser, lambda d: d.current_url.endswith("/login"), "the log-in page")
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def device_row(browser: WebDriver, device_id: str) -> str:
    return text(browser, f'#devices tr[data-device="{device_id}"]')


def rollout_state(browser: WebDriver, rollout_id: int) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, f'article[data-rollout="{rollout_id}"]')
    return found[0].get_attribute("data-state") or "" if found else ""


def test_a_wrong_token_is_refused(browser: WebDriver, ctl: ControllerProcess) -> None:
    log_in(browser, ctl, "not-the-token")
    until(browser, lambda d: "not this controller's token" in text(d, "#login-error"), "the refusal")
    assert browser.current_url.endswith("/login")
    assert browser.get_cookies() == [], "no cookie for a wrong token"
    browser.get(ctl.url + "/rollouts")
    assert browser.current_url.endswith("/login"), "pages need the log-in"
    shoot(browser, SHOTS, "login")


def test_log_in_and_see_devices_come_online(browser: WebDriver, ctl: ControllerProcess, api: ApiClient,
                                            devices: list[EmulatedDevice]) -> None:
    log_in(browser, ctl, ctl.token_file.read_text().strip())
    until(browser, lambda d: d.current_url == ctl.url + "/" and "live" in text(d, "#live"), "the fleet overview")
    cookie = browser.get_cookie("tinyfleet_token")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert browser.execute_script("return document.cookie") == "", "the page's script cannot read the token"
    assert device_row(browser, devices[0].device_id) == ""
    for device in devices:
        device.start()
        row = until(browser, lambda d, i=device.device_id: "online" in device_row(d, i) and device_row(d, i),
                    f"{device.device_id} online on the overview (no reload)")
        assert device.platform in row
        api.join(device.device_id, GROUP)
    # at least: retained messages of another test's boards on the shared broker would count too
    until(browser, lambda d: int(text(d, '[data-count="online"] .value') or 0) >= len(devices), "the online count")
    until(browser, lambda d: all(GROUP in device_row(d, x.device_id) for x in devices), "the group on every row")


def test_a_device_page_shows_what_it_reports_and_runs_none_of_it(browser: WebDriver, ctl: ControllerProcess,
                                                                 api: ApiClient, devices: list[EmulatedDevice]) -> None:
    device = devices[0]
    device._report(error=HOSTILE)  # a device (or whoever holds its credentials) reports markup
    browser.get(f"{ctl.url}/devices/{device.device_id}")
    until(browser, lambda d: text(d, "#device-error") == HOSTILE, "the reported error, shown as text")
    assert text(browser, "#device-id") == device.device_id
    assert "linux/arm64" in text(browser, "#facts") and "uptime" in text(browser, "#health")
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "#content img") == []
    click(browser, '[data-action="pin"]', "pin the whole device")  # a change sent with the cookie, from the page
    until(browser, lambda d: "whole device held" in text(d, "#facts"), "the pin on the page")
    assert api.device(device.device_id)["pins"] == {"*": None}
    click(browser, '#facts .pin button', "unpin")
    until(browser, lambda d: "not pinned" in text(d, "#facts"), "the pin gone")
    assert api.device(device.device_id)["pins"] == {}
    browser.get(ctl.url + "/")
    until(browser, lambda d: HOSTILE in text(d, "#attention"), "the device in 'need attention'")
    assert browser.execute_script("return window.pwned === undefined")
    device._report()  # and it is well again
    until(browser, lambda d: device.device_id not in text(d, "#attention"), "the device off the attention list")


def test_releases_with_per_platform_sizes(browser: WebDriver, ctl: ControllerProcess, api: ApiClient,
                                          images: list[str]) -> None:
    made = [api.create_release("hello", ref, max_bytes=1024 * 1024) for ref in images]
    browser.get(ctl.url + "/releases")
    for release in made:
        row = until(browser, lambda d, r=release: text(d, f'#releases tr[data-release="{r["id"]}"]'),
                    f"release {release['id']}")
        for platform in release["platforms"]:
            where = f'#releases tr[data-release="{release["id"]}"] td[data-platform="{platform["platform"]}"]'
            cell = text(browser, where)
            assert cell == f"{platform['compressed_size']:,} B", (platform, cell)
        assert release["version"] in row
    shoot(browser, SHOTS, "releases")


def start_from_the_page(browser: WebDriver, ctl: ControllerProcess, release_id: int, api: ApiClient) -> int:
    browser.get(ctl.url + "/rollouts")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#release option[value="{release_id}"]'),
          "the release in the form")
    before = {r["id"] for r in api.rollouts()}
    Select(browser.find_element(By.ID, "release")).select_by_value(str(release_id))
    for name, value in (("selector", f"group:{GROUP}"), ("canary", "1"), ("batch", "1")):
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#start-rollout button[type=submit]").click()
    started = eventually(lambda: [r["id"] for r in api.rollouts() if r["id"] not in before], what="a new rollout")
    return started[0]


def test_start_a_rollout_and_watch_it_finish(browser: WebDriver, ctl: ControllerProcess, api: ApiClient,
                                             devices: list[EmulatedDevice]) -> None:
    release = next(r for r in api.releases() if r["version"] == "1.0")
    canary = devices[0]
    canary.release.clear()  # hold the canary at "pulling" so the page shows the rollout on its way
    try:
        rollout = start_from_the_page(browser, ctl, release["id"], api)
        until(browser, lambda d: rollout_state(d, rollout) == "running", "the rollout running")
        until(browser, lambda d: "updating" in text(d, f'article[data-rollout="{rollout}"] tr[data-batch="0"]'),
              "the canary updating")
        click(browser, f'article[data-rollout="{rollout}"] [data-action="pause"]', "pause")
        until(browser, lambda d: rollout_state(d, rollout) == "paused", "the rollout paused")
        click(browser, f'article[data-rollout="{rollout}"] [data-action="resume"]', "resume")
        until(browser, lambda d: rollout_state(d, rollout) == "running", "the rollout resumed")
    finally:
        canary.release.set()
    until(browser, lambda d: rollout_state(d, rollout) == "completed", "the rollout completed", timeout=60)
    card = text(browser, f'article[data-rollout="{rollout}"]')
    assert f"converged {len(devices)}/{len(devices)}" in card
    assert len(browser.find_elements(By.CSS_SELECTOR, f'article[data-rollout="{rollout}"] tr[data-batch]')) == 3
    assert api.rollout(rollout)["state"] == "completed"
    shoot(browser, SHOTS, "rollouts")
    browser.get(f"{ctl.url}/devices/{canary.device_id}")
    until(browser, lambda d: "running" in text(d, '#apps tr[data-app="hello"]'), "hello running on the device page")
    shoot(browser, SHOTS, "device")


def test_start_another_and_abort_it_from_the_page(browser: WebDriver, ctl: ControllerProcess, api: ApiClient,
                                                  devices: list[EmulatedDevice]) -> None:
    release = next(r for r in api.releases() if r["version"] == "2.0")
    canary = devices[0]
    canary.release.clear()
    try:
        rollout = start_from_the_page(browser, ctl, release["id"], api)
        until(browser, lambda d: rollout_state(d, rollout) == "running", "the second rollout running")
        click(browser, "#start-rollout button[type=submit]", "start the same again")
        until(browser, lambda d: f"rollout {rollout} of hello is still running" in text(d, "#message"),
              "the API's refusal on the page")
        click(browser, f'article[data-rollout="{rollout}"] [data-action="abort"]', "abort")
        until(browser, lambda d: rollout_state(d, rollout) == "aborted", "the rollout aborted")
    finally:
        canary.release.set()
    assert api.rollout(rollout)["state"] == "aborted"
    assert "aborted by the operator" in text(browser, f'article[data-rollout="{rollout}"] .reason')
    v1 = next(r for r in api.releases() if r["version"] == "1.0")
    eventually(lambda: all(d.runs("hello") == v1["image"] for d in devices), timeout=30,
               what="every device back on 1.0")
    until(browser, lambda d: "reverted" in text(d, f'article[data-rollout="{rollout}"] tr[data-batch="0"]'),
          "the canary reverted on the page")
    shoot(browser, SHOTS, "rollouts")
    browser.get(ctl.url + "/")
    until(browser, lambda d: "r1 running 3" in text(d, "#content"), "every device on release 1, running")
    devices[2].drop_connection()  # a board loses power
    until(browser, lambda d: "offline" in text(d, f'#attention tr[data-device="{devices[2].device_id}"]'),
          "the lost board in 'need attention'")
    assert int(text(browser, '[data-count="offline"] .value')) >= 1
    shoot(browser, SHOTS, "overview")


def test_a_device_held_by_an_app_lock_shows_locked_on_its_page_and_in_the_rollout(  # type: ignore[no-untyped-def]
        browser: WebDriver, ctl: ControllerProcess, api: ApiClient, devices: list[EmulatedDevice], images) -> None:
    devices[2].reconnect()
    eventually(lambda: all(d["online"] for d in api.devices() if d["id"] in {x.device_id for x in devices}),
               what="the fleet online again")
    v1 = next(r for r in api.releases() if r["version"] == "1.0")
    v3 = api.create_release("hello", images[1], lock_max_wait=600)
    canary = devices[0]
    canary.release.clear()  # it takes the release's desired state and reports "pulling", then waits
    try:
        rollout = api.start_rollout("hello", v3["id"], f"group:{GROUP}", canary=1, batch=1, health_timeout=60)
        eventually(lambda: canary.received and canary.received[-1].desired.app("hello").image == v3["image"],  # type: ignore[union-attr]
                   what="the canary has the release")
        since = time.time() - 90
        # what an agent reports while the running app holds its update lock: downloaded, pending, locked
        canary._report([AppStatus("hello", Phase.PENDING, v3["image"], v1["image"], health="healthy",
                                  locked=LockHeld("print-job-42", since, time.time() + 510))])
        browser.get(f"{ctl.url}/devices/{canary.device_id}")
        row = until(browser, lambda d: "locked by print-job-42" in text(d, '#apps tr[data-app="hello"]') and
                    text(d, '#apps tr[data-app="hello"]'), "the app locked on the device page")
        assert "since 1m ago" in row or "since 2m ago" in row, row
        assert "max wait 600 s" in row and "goes ahead in " in row, row
        shoot(browser, SHOTS, "device-locked")
        browser.get(ctl.url + "/rollouts")
        card = f'article[data-rollout="{rollout["id"]}"]'
        until(browser, lambda d: "locked" in text(d, f'{card} [data-target="{canary.device_id}"] .badge'),
              "the canary shown locked in the rollout")
        counts = text(browser, f"{card} .counts")
        assert "pending 3 (1 locked)" in counts and "updating 0" in counts, counts
        assert "locked by print-job-42 since" in text(browser, f'{card} [data-target="{canary.device_id}"]')
        shoot(browser, SHOTS, "rollouts-locked")
    finally:
        canary.release.set()  # the lock goes: the canary switches, the rollout carries on
    assert api.wait_rollout(rollout["id"], timeout=60)["state"] == "completed"
    until(browser, lambda d: "locked" not in text(d, f'{card} .counts'), "no device locked once it landed")

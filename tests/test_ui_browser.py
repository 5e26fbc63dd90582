"""The web UI in a real browser (Debian's chromium through Playwright) against a real
`netmon run --lab`: log in, the lab's devices, a device's graphs filling with data and
following the feed, acknowledging an alert as operator and being refused as viewer, a
lab reboot arriving live without a reload, a configuration diff.

One server per module: three lab devices polled every 3 s on a database of its own.
A screenshot of each page goes to ``$NETMON_UI_ARTIFACTS`` (default: the pytest basetemp's
ui-screenshots folder). Page load times and live-update latencies are logged, not
asserted: they measure this machine as much as netmon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from netmon.config import load_settings
from netmon.store.database import Database
from netmon.store.devices import DeviceInfo, sync_devices
from tests.conftest import PgServer
from tests.peer_check import missing_peer
from tests.test_cli import _logged, _wait_for, netmon, netmon_run

pytestmark = pytest.mark.slow

log = logging.getLogger("netmon.tests.ui")
CHROMIUM = os.environ.get("NETMON_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 60_000
T = TypeVar("T")


@dataclass
class Netmon:
    url: str
    env: dict[str, str]
    tokens: dict[str, str]
    proc: subprocess.Popen[str]

    def lab(self, *args: str) -> None:
        done = netmon("lab", *args, env=self.env)
        assert done.returncode == 0, done.stderr


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end in a thread of its own: Playwright's sync API keeps an
    event loop running in the test's thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def server(one_pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netmon]:
    url = run_async(one_pg_server.create_database(template=one_pg_server.template))
    env = {
        **os.environ,
        "NETMON_DATA_DIR": str(tmp_path_factory.mktemp("ui-run") / "data"),
        "NETMON_DATABASE__URL": url,
        "NETMON_LOG__FORMAT": "json",
        "NETMON_LAB__BASE_PORT": "0",
        "NETMON_POLLER__INTERVAL": "3s",
    }
    try:
        with netmon_run(env, "--lab", "--lab-devices", "3") as proc:
            _wait_for(proc, "poller started", timeout=90)
            api = _logged(proc, "api listening")["url"]
            tokens = {}
            for role in ("viewer", "operator"):
                made = netmon("token", "create", "--role", role, "--name", f"ui-{role}", env=env)
                assert made.returncode == 0, made.stderr
                tokens[role] = made.stdout.strip()
            yield Netmon(api, env, tokens, proc)
    finally:
        run_async(one_pg_server.drop_database(url))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing_peer(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's chromium, never Playwright's download; no sandbox: CI runs as root.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("NETMON_UI_ARTIFACTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def signed_in(browser: Any, server: Netmon, role: str) -> Any:
    """A page of a fresh browser context, logged in through the form."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{server.url}/")
    assert page.url.endswith("/login")
    page.fill("#token", server.tokens[role])
    page.click("button[type=submit]")
    try:
        page.wait_for_url(f"{server.url}/", timeout=10000)
    except Exception:
        print("DEBUG", page.url, page.content()[:3000], errors)
        raise
    return page


def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT_MS / 1000) -> None:
    """Poll from Python: Playwright's wait_for_function compiles its predicate in the page,
    which the UI's Content-Security-Policy (no eval) rightly refuses."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def points(page: Any, chart: str) -> int:
    return int(page.get_attribute(f"#chart-{chart}", "data-points") or 0)


def timed_goto(page: Any, url: str, ready: str, what: str) -> None:
    started = time.monotonic()
    page.goto(url)
    page.wait_for_selector(ready)
    log.warning("UI page load: %s %.0f ms", what, (time.monotonic() - started) * 1000)


def test_log_in_and_see_the_lab_devices(browser: Any, server: Netmon, shots: Path) -> None:
    page = signed_in(browser, server, "viewer")
    # The cookie the login set is out of scripts' reach.
    cookies = page.context.cookies()
    assert [c["httpOnly"] for c in cookies if c["name"] == "netmon_token"] == [True]
    assert page.evaluate("document.cookie") == ""
    timed_goto(page, f"{server.url}/", "#totals .card.up", "overview")
    until(lambda: page.locator("#totals .card b").first.text_content() == "3", "3 devices")
    page.screenshot(path=shots / "overview.png", full_page=True)
    timed_goto(page, f"{server.url}/devices", "#devices tbody tr", "devices")
    rows = page.locator("#devices tbody tr")
    assert rows.count() == 3
    assert rows.locator("td:first-child").all_text_contents() == [
        "lab-0001",
        "lab-0002",
        "lab-0003",
    ]
    page.fill("#filter", "0002")
    until(lambda: rows.count() == 1, "the filter")
    page.fill("#filter", "")
    page.click("#devices th[data-key=name]")  # already by name: now descending
    until(lambda: rows.first.locator("a").text_content() == "lab-0003", "descending names")
    page.screenshot(path=shots / "devices.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_device_page_graphs_data_and_follows_the_feed(
    browser: Any, server: Netmon, shots: Path
) -> None:
    page = signed_in(browser, server, "viewer")
    page.goto(f"{server.url}/devices")
    started = time.monotonic()
    page.click("text=lab-0001")
    page.wait_for_selector("#interfaces tbody tr")
    log.warning("UI page load: device %.0f ms", (time.monotonic() - started) * 1000)
    assert page.locator("#health dd").first.text_content() == "yes"
    # Rates need two polls: the traffic graph fills within a few 3 s polls.
    until(lambda: points(page, "traffic") >= 2, "two traffic points")
    until(lambda: points(page, "cpu") >= 1, "a CPU point")
    assert page.locator("#chart-traffic canvas").count() == 1
    # Live: more points arrive over /ws/metrics, the page untouched.
    page.evaluate("window.unreloaded = true")
    before = points(page, "traffic")
    started = time.monotonic()
    until(lambda: points(page, "traffic") > before, "a live point")
    log.warning("UI live update: a new graph point after %.1f s", time.monotonic() - started)
    assert page.evaluate("window.unreloaded") is True
    # A longer range reads the rollups' step from the same API.
    page.click("#ranges button[data-range='86400']")
    until(lambda: "5m" in (page.text_content("#resolution") or ""), "5-minute rollups")
    page.click("#ranges button[data-range='3600']")
    until(lambda: "raw" in (page.text_content("#resolution") or ""), "raw samples")
    page.screenshot(path=shots / "device.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_an_operator_acknowledges_and_silences_an_alert_a_viewer_cannot(
    browser: Any, server: Netmon, shots: Path
) -> None:
    server.lab("flap", "lab-0002", "--interface", "2")  # down until told otherwise
    viewer = signed_in(browser, server, "viewer")
    viewer.goto(f"{server.url}/alerts")
    row = viewer.locator("#alerts tr[data-state=firing]", has_text="interface-down").first
    row.wait_for()  # arrives over /ws/alerts: no reload
    assert row.locator("button.ack").is_disabled()
    assert row.locator("button.silence").is_disabled()
    alert_id = row.get_attribute("data-id")
    # The buttons are only a hint: the API itself refuses the viewer's cookie.
    status = viewer.evaluate(
        """id => fetch(`/api/v1/alerts/${id}/ack`, {method: "POST",
             headers: {"X-Requested-With": "netmon"}}).then(r => r.status)""",
        alert_id,
    )
    assert status == 403

    operator = signed_in(browser, server, "operator")
    operator.goto(f"{server.url}/alerts")
    mine = operator.locator(f"#alerts tr[data-id='{alert_id}']")
    mine.wait_for()
    assert mine.get_attribute("data-state") == "firing"
    started = time.monotonic()
    mine.locator("button.ack").click()
    operator.locator(f"#alerts tr[data-id='{alert_id}'][data-state=acknowledged]").wait_for()
    log.warning("UI acknowledge round trip: %.0f ms", (time.monotonic() - started) * 1000)
    assert "ui-operator" in (mine.text_content() or "")
    # The viewer's page follows the change live.
    started = time.monotonic()
    viewer.locator(f"#alerts tr[data-id='{alert_id}'][data-state=acknowledged]").wait_for()
    log.warning("UI live update: acknowledgement on another page %.0f ms",
                (time.monotonic() - started) * 1000)  # fmt: skip
    # Its history: fired, then acknowledged by this token.
    mine.locator("button.history").click()
    history = operator.locator(f"tr.history[data-for='{alert_id}']")
    history.wait_for()
    assert "acknowledged by ui-operator" in (history.text_content() or "")
    # Silence it for an hour: the silence (rule and device) is listed.
    mine.locator("button.silence").click()
    operator.locator("#silences tbody tr", has_text='device="lab-0002"').wait_for()
    assert operator.locator("#error").is_hidden()
    operator.screenshot(path=shots / "alerts.png", full_page=True)
    server.lab("flap", "lab-0002", "--interface", "2", "--up")
    assert operator.errors == []  # type: ignore[attr-defined]


def test_a_lab_reboot_appears_live(browser: Any, server: Netmon, shots: Path) -> None:
    page = signed_in(browser, server, "viewer")
    page.goto(f"{server.url}/alerts")
    page.wait_for_selector("#live.on")  # the events feed is connected
    page.evaluate("window.unreloaded = true")
    started = time.monotonic()
    server.lab("reboot", "lab-0003")
    page.locator("#events li", has_text="lab-0003").filter(has_text="reboot").first.wait_for()
    log.warning("UI live update: lab reboot on the page %.1f s after the command (poll: 3 s)",
                time.monotonic() - started)  # fmt: skip
    assert page.evaluate("window.unreloaded") is True
    page.screenshot(path=shots / "events.png", full_page=True)


def test_a_configuration_diff(browser: Any, server: Netmon, shots: Path) -> None:
    server.lab("config-change", "lab-0002", "--note", "uplink moved to Te1/1/2")
    page = signed_in(browser, server, "viewer")
    deadline = time.monotonic() + 60
    while True:  # the next poll of lab-0002 stores the new version
        page.goto(f"{server.url}/configs")
        page.select_option("#device", label="lab-0002")
        page.wait_for_selector("#versions tbody tr")
        page.wait_for_selector("#diff tbody tr")
        if page.locator("#diff td.add", has_text="uplink moved to Te1/1/2").count():
            break
        assert time.monotonic() < deadline, "no version with the change"
        time.sleep(2)
    assert page.locator("#diff td.del").count() >= 1  # the old description, on the left
    page.screenshot(path=shots / "configs.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_api_docs_render_from_this_host_alone(
    browser: Any, server: Netmon, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    started = time.monotonic()
    page.goto(f"{server.url}/schema")
    page.locator("#swagger-container .info .title", has_text="netmon").wait_for()
    page.locator(".opblock-tag", has_text="devices").first.wait_for()
    log.warning("UI page load: /schema %.0f ms", (time.monotonic() - started) * 1000)
    offsite = [u for u in requested if not u.startswith((server.url, "data:"))]
    assert offsite == [], offsite
    page.screenshot(path=shots / "schema.png")
    context.close()


async def _add_devices(url: str, data_dir: Path, n: int) -> None:
    db = Database(load_settings(None, data_dir=data_dir, database={"url": url}).database, data_dir)
    await db.start()
    try:
        sites = ("lon1", "par1", "fra1", "nyc1")
        bulk = [
            DeviceInfo(
                f"edge-{i:04d}",
                f"10.9.{i // 250}.{i % 250 + 1}",
                sites[i % 4],
                "edge",
                "ios",
                ("bulk",),
            )
            for i in range(n)
        ]
        # A source of their own (not the lab's inventory): never polled, listed "unpolled"
        # or "unknown", which is what a list of this size is about.
        await sync_devices(db, bulk, owner="ui-test", poller="ui-test")
    finally:
        await db.stop()


def test_a_thousand_devices_list_and_filter_in_the_browser(
    browser: Any, server: Netmon, shots: Path, tmp_path: Path
) -> None:
    # Last in the module: the other tests count the lab's three devices.
    run_async(_add_devices(server.env["NETMON_DATABASE__URL"], tmp_path, 1200))
    page = signed_in(browser, server, "viewer")
    started = time.monotonic()
    page.goto(f"{server.url}/devices")
    until(lambda: "of 1203" in (page.text_content("#count") or ""), "1,203 devices listed")
    log.warning(
        "UI page load: devices, 1,203 of them, %.0f ms", (time.monotonic() - started) * 1000
    )
    assert page.locator("#devices tbody tr").count() == 500  # drawn at most; the count says so
    started = time.monotonic()
    page.fill("#filter", "edge-07 par1")
    until(lambda: page.locator("#devices tbody tr").count() == 25, "the filter on 1,203")
    log.warning("UI filter over 1,203 devices: %.0f ms", (time.monotonic() - started) * 1000)
    names = page.locator("#devices tbody td:first-child").all_text_contents()
    assert all(n.startswith("edge-07") for n in names)
    page.screenshot(path=shots / "devices-1200.png", full_page=False)
    assert page.errors == []  # type: ignore[attr-defined]

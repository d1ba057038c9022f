"""The police console in headless Chromium (Debian's chromium + chromedriver through Selenium):
it loads from the service alone, shows a live alert from the stream, opens the case and draws
the track with its H3 cells; a screenshot is saved under artifacts/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.recovery.harness import Service, seed_sightings
from tests.recovery.test_alerts import make_alert, produce

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts"


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--window-size=1300,900"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_console_live_alert_and_track(service: Service, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser  # type: ignore[assignment]
    now = int(time.time() * 1000)
    ops = {"Authorization": service.new_key("ops", "ops")["Authorization"]}
    owner = {"Authorization": service.new_key("owner", "o")["Authorization"]}
    police = service.new_key("police", "console")["Authorization"].removeprefix("Bearer ")
    pts = [(600 + i, now - 3_000_000 + i * 600_000, 25.03 + 0.006 * i, 102.70 + 0.008 * i)
           for i in range(5)]  # fmt: skip
    readers = [{"reader_id": r, "lat": la, "lon": lo, "kind": "fixed"} for r, _, la, lo in pts]
    r = httpx.post(f"{service.url}/v1/readers", json={"readers": readers}, headers=ops)
    assert r.status_code == 200
    tag = 91_000
    httpx.post(f"{service.url}/v1/bikes", json={"tag_id": tag, "plate": "CON1"}, headers=owner)
    seed_sightings(service, tag, pts)
    r = httpx.post(
        f"{service.url}/v1/thefts",
        json={"tag_id": tag, "stolen_at": now - 3_600_000, "place": "station"},
        headers=owner,
    )
    case_id = r.json()["case"]["case_id"]

    d.get(f"{service.url}/console")  # type: ignore[attr-defined]
    d.find_element(By.ID, "key").send_keys(police)  # type: ignore[attr-defined]
    d.find_element(By.ID, "reason").send_keys("console test")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "#login button").click()  # type: ignore[attr-defined]
    wait = WebDriverWait(d, 20)
    wait.until(lambda drv: drv.find_element(By.ID, "status").text == "live")
    assert case_id in d.find_element(By.ID, "cases").text  # type: ignore[attr-defined]

    produce(service, [make_alert(case_id, tag, 604, now)])
    alert = wait.until(
        lambda drv: drv.find_element(By.CSS_SELECTOR, f'#alerts li[data-case-id="{case_id}"]')
    )
    assert "reader 604" in alert.text
    alert.click()
    wait.until(lambda drv: drv.find_element(By.ID, "map").get_attribute("data-track-points") == "5")
    svg = d.find_element(By.ID, "map")  # type: ignore[attr-defined]
    assert len(svg.find_elements(By.CSS_SELECTOR, "polygon.cell")) == 5
    assert len(svg.find_elements(By.CSS_SELECTOR, "circle.reader")) >= 5
    assert svg.find_elements(By.CSS_SELECTOR, "polyline.track")
    assert case_id in d.find_element(By.ID, "case-id").text  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "console.png"
    assert d.save_screenshot(str(shot))  # type: ignore[attr-defined]
    print(f"screenshot: {shot}")
    # The console needs nothing from outside the service (no CDN, no tiles by default).
    origins = d.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {service.url}

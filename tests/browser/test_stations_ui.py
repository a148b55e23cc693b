"""An owner creates a station in the browser, drops parts into its folder and watches the verdicts arrive on the
Station page without reloading it."""

from __future__ import annotations

import threading

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import trained_version  # noqa: F401  (fixture)
from tests.webapp.stations_helpers import drop_image
from webapp.stations.models import Station
from webapp.stations.runner import Runner

pytestmark = pytest.mark.browser


def test_create_a_station_drop_files_and_watch_verdicts_arrive(page, live_server, trained_version, tmp_path):  # noqa: F811
    project = trained_version.project
    inbox = tmp_path / "camera-drop"
    inbox.mkdir()
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/")
    page.click("nav.tabs >> text=Stations")
    page.wait_for_selector("#no-stations")
    page.fill("#station-create input[name=name]", "Line 3 camera")
    page.select_option("#station-create select[name=source_kind]", "folder")
    page.fill("#station-create input[name=folder_path]", str(inbox))
    page.fill("#station-create textarea[name=source_settings]", '{"poll_seconds": 0.05}')
    page.click("#station-create button[type=submit]")
    page.wait_for_selector("#station-name")
    assert page.inner_text("#station-name") == "Line 3 camera"
    assert page.inner_text("#station-state") == "waiting"  # no runner yet
    station = Station.objects.get(project=project, name="Line 3 camera")
    stop = threading.Event()
    runner = threading.Thread(target=Runner(lease_seconds=3).run, args=(stop,), daemon=True)
    runner.start()
    try:
        page.wait_for_function("document.querySelector('#station-state').textContent === 'running'")
        drop_image(inbox, "good-1.png", seed=1100)
        drop_image(inbox, "bad-1.png", seed=2100, defect="stain")
        # the live view fills in by itself: both images, their verdicts and the counters
        page.wait_for_function("document.querySelectorAll('#station-recent figure.inspection').length === 2")
        verdicts = page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('figure.inspection')]"
            ".map(f => [f.dataset.name, f.dataset.verdict]))"
        )
        assert verdicts == {"good-1.png": "ok", "bad-1.png": "ng"}
        assert (page.inner_text("#count-ok"), page.inner_text("#count-ng")) == ("1", "1")
        assert page.inner_text("#latency-p95").endswith("ms")
        assert page.locator("#station-recent img.heat").count() == 2
        # pausing from the page stops the station
        page.click("#pause")
        page.wait_for_selector("#resume")
        station.refresh_from_db()
        assert station.paused
    finally:
        stop.set()
        runner.join(30)

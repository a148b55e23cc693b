"""A quality engineer takes a model to the line: the Model page's download link gives the version's bundle."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import trained_version  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser


def test_download_link_on_the_model_page_gives_the_versions_bundle(page, live_server, trained_version, tmp_path):  # noqa: F811
    # given: the owner on the project's Model tab
    version = trained_version
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{version.project.public_id}/")
    page.click("nav.tabs >> text=Model")
    page.wait_for_selector("#model-bundle")

    # when: they click the download link
    with page.expect_download(timeout=120_000) as download_info:
        page.click("#model-bundle")
    download = download_info.value
    download.save_as(tmp_path / download.suggested_filename)

    # then: a zip named after the project and version, whose manifest is this version's and whose files check out
    assert download.suggested_filename == f"kensa-sample-machined-discs-v{version.number}.zip"
    with zipfile.ZipFile(tmp_path / download.suggested_filename) as archive:
        folder = download.suggested_filename.removesuffix(".zip")
        manifest = json.loads(archive.read(f"{folder}/manifest.json"))
        assert manifest["version"]["id"] == str(version.public_id) and manifest["family"] == version.family
        assert {f"{folder}/{name}" for name in manifest["files"]} | {f"{folder}/manifest.json"} == set(
            archive.namelist()
        )
        assert archive.read(f"{folder}/kensa_runner.py").startswith(b'"""Kensa model bundle runner')

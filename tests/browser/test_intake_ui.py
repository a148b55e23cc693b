"""A person logs in, creates a project, drops a zip and picks files, and watches thumbnails appear."""

import base64
import io
import zipfile

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import png_bytes
from webapp.images.models import Image, Label

pytestmark = pytest.mark.browser


def drop_files(page, selector: str, files: dict[str, bytes]) -> None:
    """Fires a real drop event carrying `files` on the element, as a drag from the desktop would."""
    payload = [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in files.items()]
    page.evaluate(
        """([selector, files]) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name));
            }
            const target = document.querySelector(selector);
            target.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
            target.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        [selector, payload],
    )


def test_create_project_upload_and_see_thumbnails(page, live_server, celery_worker, owner, tmp_path):
    # given a logged-in user
    log_in(page, live_server, "olivia")
    # when they create a project
    page.fill("input[name=name]", "Hinges")
    page.click("text=Create project")
    page.wait_for_selector("h1:has-text('Hinges')")
    page.click("nav.tabs >> text=Upload")
    page.wait_for_selector("#upload-form[data-ready='1']", state="attached")
    # and drop a zip in MVTec layout on the drop zone
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"hinge/train/good/{i}.png", png_bytes(i))
        z.writestr("hinge/test/crack/0.png", png_bytes(10, defect="scratch"))
    drop_files(page, "#dropzone", {"hinge.zip": archive.getvalue()})
    page.wait_for_selector("#upload-status:has-text('Done')")
    # and pick two loose files plus a broken one with the file chooser
    loose = {"x.png": png_bytes(20), "y.png": png_bytes(21), "broken.png": b"not really a png"}
    for name, data in loose.items():
        (tmp_path / name).write_bytes(data)
    page.set_input_files("#files", [str(tmp_path / n) for n in loose])
    page.click("#upload-button")
    # then each file gets its own result line, the bad one with a reason
    page.wait_for_selector("#upload-status:has-text('Done: 6 added, 0 already present, 1 rejected')")
    assert page.locator("tr.result.rejected").inner_text().startswith("broken.png")
    assert float(page.get_attribute("#upload-progress", "value")) == 100
    assert Image.objects.filter(label=Label.GOOD).count() == 3
    # and the grid shows thumbnails once the worker has made them
    page.click("text=See the images")
    page.wait_for_function("document.querySelectorAll('img.thumb').length === 6", timeout=30_000)
    assert page.locator("span.thumb.pending").count() == 0
    # every thumbnail is a real, decodable picture (waiting for the browser to fetch the freshly swapped ones)
    page.wait_for_function(
        "Array.from(document.querySelectorAll('img.thumb')).every(i => i.complete && i.naturalWidth > 0)"
    )

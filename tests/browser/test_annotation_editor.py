"""A person annotates in the browser: draws with the mouse on a zoomed, non-square image, uses the keyboard, and
meets a newer save from another tab."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.browser.conftest import log_in
from webapp.images.intake.ingest import IncomingFile, images_ingest
from webapp.images.models import Annotation, Image, Label
from webapp.projects.services import defect_class_create
from webapp.storage import stored_file_read

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 160, 96


def _images(project, owner, count=1):
    files = []
    for seed in range(count):
        pixels = np.random.default_rng(seed).integers(60, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
        files.append(IncomingFile(f"part{seed}.png", lambda d=data: d))
    return [r.image for r in images_ingest(project=project, user=owner, files=files).results]


def _open_editor(page, live_server, project, image):
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/images/{image.public_id}/annotate/")
    page.wait_for_selector("#editor[data-ready='1']", state="attached")


def _view(page) -> dict:
    return json.loads(page.get_attribute("#editor-canvas", "data-view"))


def test_stroke_and_box_drawn_with_the_mouse_are_saved_at_full_resolution(page, live_server, project, owner):
    # given a 160x96 image and a defect class, open in the editor
    scratch = defect_class_create(project=project, name="scratch", colour="#ff0000")
    (image,) = _images(project, owner)
    _open_editor(page, live_server, project, image)
    canvas = page.locator("#editor-canvas").bounding_box()
    # when the person zooms in with the wheel (so screen and image pixels differ by a factor and an offset)
    fitted = _view(page)
    page.mouse.move(canvas["x"] + canvas["width"] * 0.4, canvas["y"] + canvas["height"] * 0.45)
    page.mouse.wheel(0, -200)
    page.wait_for_function(
        f"JSON.parse(document.getElementById('editor-canvas').dataset.view).scale > {fitted['scale']}"
    )
    view = _view(page)
    assert view["scale"] != 1 and view["scale"] != fitted["scale"]

    def screen(x, y):  # an image pixel's position on the screen, from the view the editor reports
        return canvas["x"] + view["ox"] + x * view["scale"], canvas["y"] + view["oy"] + y * view["scale"]

    # and sets the brush to 7 image pixels with ] (3 -> 5 -> 7)
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert page.get_attribute("#editor", "data-brush") == "7"
    # and paints a horizontal stroke from (30, 40) to (90, 40)
    page.mouse.move(*screen(30, 40))
    page.mouse.down()
    for x in range(30, 91, 6):
        page.mouse.move(*screen(x, 40))
    page.mouse.up()
    # and drags a box from (100, 60) to (140, 88) with the box tool
    page.keyboard.press("r")
    page.mouse.move(*screen(100, 60))
    page.mouse.down()
    page.mouse.move(*screen(120, 70), steps=3)
    page.mouse.move(*screen(140, 88), steps=3)
    page.mouse.up()
    # and saves
    page.keyboard.press("s")
    page.wait_for_selector("#save-status[data-state='saved']")
    # then the stored mask is at full resolution, 255 under the stroke and 0 away from it
    annotation = Annotation.objects.get(image=image, defect_class=scratch)
    with PILImage.open(io.BytesIO(stored_file_read(annotation.mask.name))) as picture:
        assert picture.size == (WIDTH, HEIGHT) and picture.mode == "L"
        mask = np.asarray(picture)
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert (mask[40, 32:89] == 255).all() and mask[38, 60] == 255 and mask[42, 60] == 255
    assert mask[40, 10] == 0 and mask[40, 110] == 0 and mask[30, 60] == 0 and mask[50, 60] == 0
    assert 60 * 5 < (mask == 255).sum() < 60 * 9  # a 7-pixel-wide, 60-pixel-long stroke: the zoom was undone
    # and the box is where it was drawn, in image pixels
    (box,) = annotation.boxes
    assert np.abs(np.array(box) - [100, 60, 140, 88]).max() <= 1, box
    assert (annotation.source, annotation.author) == ("manual", owner)
    image.refresh_from_db()
    assert image.label == Label.DEFECT and image.annotation_version >= 1


def test_keyboard_drives_tools_classes_labels_history_and_navigation(page, live_server, project, owner):
    # given two classes and three images, the newest open
    defect_class_create(project=project, name="scratch", colour="#ff0000")
    defect_class_create(project=project, name="dent", colour="#0000ff")
    oldest, middle, newest = _images(project, owner, count=3)
    _open_editor(page, live_server, project, newest)
    editor = page.locator("#editor")

    def attr(name):
        return editor.get_attribute(f"data-{name}")

    # tools
    for key, tool in [("e", "eraser"), ("r", "box"), ("b", "brush")]:
        page.keyboard.press(key)
        assert attr("tool") == tool
    # brush size
    size = int(attr("brush"))
    page.keyboard.press("]")
    assert int(attr("brush")) > size
    size = int(attr("brush"))
    page.keyboard.press("[")
    assert int(attr("brush")) < size
    # defect classes by number
    dent = project.defect_classes.get(name="dent")
    page.keyboard.press("2")
    assert attr("active-class") == str(dent.id)
    assert page.get_attribute("[data-layer='1']", "aria-pressed") == "true"
    # labels, undo and redo
    page.keyboard.press("g")
    assert attr("label") == "good"
    page.keyboard.press("d")
    assert attr("label") == "defect"
    page.keyboard.press("Control+z")
    assert attr("label") == "good"
    page.keyboard.press("Control+Shift+z")
    assert attr("label") == "defect"
    # the help overlay
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()
    # s saves the label
    page.keyboard.press("s")
    page.wait_for_selector("#save-status[data-state='saved']")
    assert Image.objects.get(id=newest.id).label == Label.DEFECT
    # j goes to the next image (older), k back, u to the next unlabelled one
    page.keyboard.press("j")
    page.wait_for_url(f"**/images/{middle.public_id}/annotate/")
    page.wait_for_selector("#editor[data-ready='1']", state="attached")
    page.keyboard.press("g")
    page.keyboard.press("ArrowLeft")  # leaving saves first
    page.wait_for_url(f"**/images/{newest.public_id}/annotate/")
    assert Image.objects.get(id=middle.id).label == Label.GOOD
    page.wait_for_selector("#editor[data-ready='1']", state="attached")
    page.keyboard.press("u")
    page.wait_for_url(f"**/images/{oldest.public_id}/annotate/")


def test_a_stale_tab_is_told_and_does_not_overwrite(page, live_server, project, owner):
    # given the editor open on an image
    (image,) = _images(project, owner)
    _open_editor(page, live_server, project, image)
    # when another tab saves the image meanwhile
    Image.objects.filter(id=image.id).update(label=Label.GOOD, annotation_version=1)
    # and this tab labels it a defect and saves
    page.keyboard.press("d")
    page.keyboard.press("s")
    # then it is told, and the other save stands
    page.wait_for_selector("#save-status[data-state='conflict']")
    assert "Reload the page" in page.inner_text("#save-status")
    assert Image.objects.get(id=image.id).label == Label.GOOD

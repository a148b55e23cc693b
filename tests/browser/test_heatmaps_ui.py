"""What the model and the labels say, where a person looks: the review queue's heatmap shows on an item the model
called good (the uncertain ones the queue exists for), the card names the file and its place in the queue, and the
image page shows the labels in their class colours and the latest prediction with its heatmap."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import png_bytes, trained_version  # noqa: F401  (fixture)
from webapp.images.models import Annotation, Split
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import predict_bytes
from webapp.review import services
from webapp.review.models import ReviewItem

pytestmark = pytest.mark.browser

# Draws an <img> into a canvas and counts its painted pixels and colours (alpha 255 only: the outline).
PIXELS = """async (img) => {
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0; const colours = new Set(); const solid = new Set();
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0) { painted++; colours.add(data[i] + ',' + data[i + 1] + ',' + data[i + 2]); }
    if (data[i + 3] === 255) solid.add(data[i] + ',' + data[i + 1] + ',' + data[i + 2]);
  }
  return {painted, total: data.length / 4, colours: colours.size, solid: [...solid]};
}"""


def test_review_card_shows_the_heatmap_of_a_part_called_good_its_file_and_place(
    page,
    live_server,
    trained_version,  # noqa: F811
    owner,
):
    project = trained_version.project
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0, band_high=1, audit_percent=0)
    for seed in (611, 612):
        predict_bytes(
            version=trained_version, data=png_bytes(seed, size=96), purpose=Purpose.TRIAL, name=f"cam-{seed}.png"
        )
    first = ReviewItem.objects.filter(project=project).order_by("id").first()
    assert not first.prediction.is_anomalous  # below the threshold: the heatmap used to be blank
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/review/")
    page.wait_for_selector(f"#review-item[data-item='{first.id}']")
    # the card names the file and where it is in the queue
    assert page.inner_text("#review-place") == "1 of 2"
    assert page.inner_text("#review-file-name") == "cam-611.png"
    # h shows the heatmap: painted over the whole part, in more than one shade, with its legend
    page.keyboard.press("h")
    heat = page.locator("#review-item .heat")
    assert heat.is_visible()
    drawn = heat.evaluate(PIXELS)
    assert drawn["painted"] == drawn["total"] and drawn["colours"] >= 3, drawn
    assert page.locator("#review-queue .heat-legend").is_visible()
    # skip: the second one is 2 of 2
    page.keyboard.press("s")
    page.wait_for_selector("#review-file-name:has-text('cam-612.png')")
    assert page.inner_text("#review-place") == "2 of 2"


def test_image_page_shows_labels_in_class_colours_and_the_latest_prediction(
    page,
    live_server,
    trained_version,  # noqa: F811
):
    project = trained_version.project
    annotation = (
        Annotation.objects.filter(image__project=project, image__split=Split.TEST)
        .exclude(mask="")
        .select_related("image", "defect_class")
        .first()
    )
    image = annotation.image
    prediction = Prediction.objects.get(image=image, model_version=trained_version, purpose=Purpose.TEST)
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/images/{image.public_id}/")
    # the label is drawn in its class colour, not faint white
    label = page.locator(".viewer .label-overlay").first
    assert label.is_visible()
    colour = annotation.defect_class.colour.lstrip("#")
    expected = ",".join(str(int(colour[i : i + 2], 16)) for i in (0, 2, 4))
    drawn = label.evaluate(PIXELS)
    assert drawn["solid"] == [expected], drawn
    # the latest prediction: version, call and score
    said = page.inner_text("#latest-prediction")
    assert f"v{trained_version.number}" in said
    assert page.inner_text("#prediction-call") == ("DEFECT" if prediction.is_anomalous else "GOOD")
    assert page.inner_text("#prediction-score") == f"{prediction.normalised_score:.3f}"
    # and its heatmap, off until asked for, painted when shown
    heat = page.locator(".viewer .heat")
    assert not heat.is_visible()
    page.check("#heat-toggle")
    assert heat.is_visible()
    assert heat.evaluate(PIXELS)["painted"] > 0
    page.uncheck(".show-labels")
    assert not label.is_visible()

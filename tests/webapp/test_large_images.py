"""A 12 MP camera frame through upload, training (PatchCore, tiled automatically), evaluation, the dashboard
gallery, trial detection and the API, within the memory target (issue 16). A tiny training set and small tiles keep
it quick."""

import io
import resource

import numpy as np
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from webapp.api import services as api_services
from webapp.dashboard.services import trial_run
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Image, Label, Split
from webapp.inference.models import Prediction, Purpose
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.execution import training_run_execute
from webapp.training.models import ModelVersion, RunStatus

WIDTH, HEIGHT = 4000, 3000  # 12 MP
PEAK_RSS_LIMIT_BYTES = 4 * 1024**3


def frame_png(seed: int) -> bytes:
    """A 12 MP grey frame: a smooth part on a dark ground with sensor grain (fast PNG compression)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, size=(30, 40), dtype=np.uint8)
    frame = np.asarray(PILImage.fromarray(small).resize((WIDTH, HEIGHT), PILImage.Resampling.BILINEAR))
    frame = (frame + rng.integers(0, 4, size=frame.shape, dtype=np.uint8)).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(frame, "L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _upload(project, owner, name: str, data: bytes, *, split: str) -> Image:
    report = uploads_ingest(project=project, user=owner, uploads=[SimpleUploadedFile(name, data)])
    assert report.added == 1, report.results
    image = Image.objects.get(project=project, original_name=name)
    Image.objects.filter(id=image.id).update(label=Label.GOOD, split=split)
    return image


def _map_shape(prediction: Prediction) -> tuple[int, int]:
    with default_storage.open(prediction.anomaly_map.name) as stored, PILImage.open(stored) as picture:
        return picture.height, picture.width


def test_a_12_mp_frame_goes_through_upload_training_evaluation_trial_and_the_api(transactional_db, client, owner):
    # given: a small sample project plus two 12 MP frames uploaded as good images, one to train, one to test
    project = sample_project_create(owner=owner, n_good=20, n_defect=4, size=96)
    train_frame = _upload(project, owner, "frame_train.png", frame_png(1), split=Split.TRAIN)
    test_frame = _upload(project, owner, "frame_test.png", frame_png(2), split=Split.TEST)
    assert (train_frame.width, train_frame.height) == (WIDTH, HEIGHT)

    # when: PatchCore trains with 128 px tiles (tiling chosen automatically for these frames)
    run = services.training_run_request(project=project, requested_by=owner, family="patchcore", image_size=128)
    assert run.config["tile_working_size"] == 1024
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)

    # then: it trained and evaluated the 12 MP test frame, its map at the frame's own size
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    version = ModelVersion.objects.get(run=run)
    assert version.metrics["image_auroc"] is not None
    evaluated = Prediction.objects.get(model_version=version, image=test_frame, purpose=Purpose.TEST)
    assert _map_shape(evaluated) == (HEIGHT, WIDTH)
    # the dashboard gallery colours that 12 MP map
    client.force_login(owner)
    kwargs = {"project_id": project.public_id, "prediction_id": evaluated.id}
    overlay = client.get(reverse("prediction_heatmap", kwargs=kwargs))
    assert overlay.status_code == 200 and overlay["Content-Type"] == "image/png"
    assert PILImage.open(io.BytesIO(overlay.content)).size == (WIDTH, HEIGHT)

    # trial detection on a 12 MP upload (predictions shrink inputs to 2048 px before decoding to RGB)
    [trial] = trial_run(version=version, uploads=[SimpleUploadedFile("trial.png", frame_png(3))])
    assert trial.problem in (None, ""), trial.problem
    assert _map_shape(trial.result.prediction) == (1536, 2048)

    # and the API
    _, secret = api_services.api_token_create(project=project, name="cam", scopes=["predict"], created_by=owner)
    response = client.post(
        reverse("api_predict", kwargs={"project_id": project.public_id}),
        {"image": io.BytesIO(frame_png(4))},
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 200, response.content[:300]
    assert "score" in response.content.decode()

    # all within the memory target (this process's peak, torch and the test server included)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < PEAK_RSS_LIMIT_BYTES

"""The Train page says what PatchCore will choose from the data, Advanced overrides it, and the version stores and
shows what was chosen (issue 21)."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from ml.adaptive import choose_settings
from webapp.images.models import Image, Label, Split
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.execution import training_run_execute
from webapp.training.models import ModelVersion, RunStatus, TrainingRun

SMALL = {"n_good": 30, "n_defect": 9, "size": 96}


@pytest.mark.django_db
def test_train_page_shows_the_settings_the_data_will_choose(client, owner):
    # given: no validation images, so one model is trained (not a comparison of candidates at fixed sizes)
    project = sample_project_create(owner=owner, **SMALL)
    Image.objects.filter(project=project, split=Split.VALIDATION).update(split=Split.TEST)
    n_good = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD).count()
    client.force_login(owner)

    # when
    page = client.get(reverse("train", args=[project.public_id])).content.decode()

    # then: the rule's own sentence for these images (96 px parts: the smallest working size), before training
    expected = choose_settings(n_good=n_good, short_side=96, rotation_invariant=None).sentence
    assert f'<p class="plan" id="planned-settings">{expected}' in page
    assert expected.startswith(f"{n_good} good images: Kensa works at 128 px")
    assert "it checks when training starts" in expected
    assert 'name="rotations"' in page


@pytest.mark.django_db
def test_rotations_outside_the_choices_are_refused(owner):
    project = sample_project_create(owner=owner, **SMALL)
    with pytest.raises(ValidationError, match="Rotated copies must be one of 1, 4, 8, 16"):
        services.training_run_request(project=project, requested_by=owner, family="patchcore", rotations=3)


def test_an_override_wins_and_the_version_stores_and_shows_the_choice(transactional_db, client, owner):
    # given: Advanced asks for no rotated copies; the rest is left to the rule
    project = sample_project_create(owner=owner, **SMALL)
    client.force_login(owner)
    client.post(reverse("train", args=[project.public_id]), {"family": "patchcore", "rotations": "1"})
    run = TrainingRun.objects.get(project=project)
    assert run.config == {"rotations": 1}
    assert services.training_run_claim(run_id=run.id)

    # when
    training_run_execute(run_id=run.id)

    # then
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    version = ModelVersion.objects.get(run=run)
    chosen = version.metrics["chosen_settings"]
    assert chosen["rotations"] == 1 and "rotations" not in chosen["chosen"]
    assert chosen["image_size"] == 128 and "image_size" in chosen["chosen"]
    assert "adds no rotated copies (your setting)" in chosen["sentence"]
    page = client.get(reverse("version_detail", args=[project.public_id, version.public_id])).content.decode()
    assert f"Settings chosen from the data: {chosen['sentence']}" in page


@pytest.mark.django_db
def test_the_plan_and_the_fit_read_the_same_short_side_from_every_good_image(owner, monkeypatch):
    # given: good training images whose stored shorter sides jump from 130 to 180 px near the rule's 10 % share,
    # where a probe of some of them and the whole set can plan different working sizes (magnetic tile's shape)
    from ml.adaptive import short_side_of, typical_short_side
    from webapp.training.datasets import ProjectSamples
    from webapp.training.settings_plan import good_image_facts

    project = sample_project_create(owner=owner, n_good=40, n_defect=2, size=64)
    goods = list(Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD).order_by("sha256"))
    for k, image in enumerate(goods):
        Image.objects.filter(id=image.id).update(width=200, height=130 if k % 10 == 0 else 180 + k % 20)
    samples = ProjectSamples(Image.objects.filter(id__in=[i.id for i in goods]).order_by("sha256"))
    monkeypatch.setattr(ProjectSamples, "__getitem__", lambda *a: pytest.fail("an image was read for its size"))

    # when
    planned = good_image_facts(project).short_side
    fitted = short_side_of(samples, range(len(samples)))

    # then: the Train page's plan and the fit agree, from the database alone
    sizes = samples.image_sizes(range(len(samples)))
    assert planned == fitted == typical_short_side(sizes)
    assert len(sizes) == len(goods) and fitted == 130

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from webapp.projects import services
from webapp.projects.models import Project, Role


@pytest.mark.django_db
def test_create_project_from_the_list_page(client, owner):
    client.force_login(owner)
    response = client.post(reverse("project_list"), {"name": "  Gear housings  "})
    project = Project.objects.get()
    assert response.status_code == 302 and response.url == reverse("project_detail", args=[project.public_id])
    assert project.name == "Gear housings"
    assert project.memberships.get().role == Role.OWNER
    listing = client.get(reverse("project_list")).content.decode()
    assert "Gear housings" in listing


@pytest.mark.django_db
def test_rename_and_delete_with_confirmation(client, owner, project, django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.webapp.conftest import png_bytes
    from webapp.images.intake.ingest import uploads_ingest

    uploads_ingest(project=project, user=owner, uploads=[SimpleUploadedFile("a.png", png_bytes(1))])
    assert default_storage.exists(f"projects/{project.public_id}")
    client.force_login(owner)
    client.post(reverse("project_rename", args=[project.public_id]), {"name": "Brackets v2"})
    project.refresh_from_db()
    assert project.name == "Brackets v2"
    # a wrong confirmation deletes nothing
    response = client.post(reverse("project_delete", args=[project.public_id]), {"confirm_name": "Brackets"})
    assert response.status_code == 200 and "exactly" in response.content.decode()
    assert Project.objects.filter(id=project.id).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("project_delete", args=[project.public_id]), {"confirm_name": "Brackets v2"})
    assert response.status_code == 302
    assert not Project.objects.filter(id=project.id).exists()
    assert not default_storage.exists(f"projects/{project.public_id}")


@pytest.mark.django_db
def test_members_and_the_last_owner(project, owner, outsider):
    services.membership_set(project=project, username="oscar", role=Role.ANNOTATOR)
    assert project.memberships.get(user=outsider).role == Role.ANNOTATOR
    with pytest.raises(ValidationError, match=services.LAST_OWNER_MESSAGE):
        services.membership_set(project=project, username="olivia", role=Role.VIEWER)
    with pytest.raises(ValidationError, match=services.LAST_OWNER_MESSAGE):
        services.membership_remove(project=project, membership=project.memberships.get(user=owner))
    with pytest.raises(ValidationError, match=services.NO_SUCH_USER_MESSAGE):
        services.membership_set(project=project, username="nobody", role=Role.VIEWER)


@pytest.mark.django_db
def test_defect_classes_get_palette_colours_and_unique_names(project):
    first = services.defect_class_create(project=project, name="scratch")
    second = services.defect_class_create(project=project, name="dent")
    assert first.colour != second.colour
    with pytest.raises(ValidationError):
        services.defect_class_create(project=project, name="scratch")
    with pytest.raises(ValidationError):
        services.defect_class_create(project=project, name="stain", colour="red")


@pytest.mark.django_db
def test_project_list_counts(client, owner, project, django_assert_max_num_queries):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.webapp.conftest import png_bytes
    from webapp.images.bulk import images_label_change
    from webapp.images.intake.ingest import uploads_ingest

    uploads_ingest(
        project=project, user=owner, uploads=[SimpleUploadedFile(f"{i}.png", png_bytes(i)) for i in range(3)]
    )
    images_label_change(
        project=project, images=list(project.images.values_list("id", flat=True))[:2], label="good", user=owner
    )
    client.force_login(owner)
    with django_assert_max_num_queries(6):
        page = client.get(reverse("project_list")).content.decode()
    row = page.split("Brackets")[1].split("</tr>")[0]
    assert [cell.strip("</td> \n") for cell in row.split("<td>")[1:]] == ["owner", "3", "2", "0", "1"]

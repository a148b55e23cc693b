"""Writes about projects, members and defect classes. Views and tasks call these; nothing else writes."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError

from webapp.audit.models import AuditAction
from webapp.audit.services import audit_record
from webapp.projects.models import DefectClass, Membership, Project, Role

PALETTE = ("#e4572e", "#17bebb", "#ffc914", "#76b041", "#7b2cbf", "#f46036", "#2e86ab", "#c5283d", "#3bceac")

LAST_OWNER_MESSAGE = "A project needs at least one owner."
NO_SUCH_USER_MESSAGE = "No user with that name."
CLASS_IN_USE_MESSAGE = "This defect class still has drawn masks or boxes; remove them first."


@transaction.atomic
def project_create(*, name: str, owner: AbstractBaseUser, description: str = "") -> Project:
    project = Project(name=name.strip(), description=description, created_by=owner)
    project.full_clean()
    project.save()
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


def project_rename(*, project: Project, name: str) -> Project:
    project.name = name.strip()
    project.full_clean()
    project.save(update_fields=["name"])
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    """Deletes the project with everything in it, and (after commit) its whole storage folder: originals,
    thumbnails, masks, model artifacts, predictions and batch inputs all live under it."""
    from webapp.images.models import Annotation
    from webapp.storage import stored_folder_delete

    folder = f"projects/{project.public_id}"
    # Annotations PROTECT their defect classes; remove them first so the cascade can proceed.
    Annotation.objects.filter(image__project=project).delete()
    project.delete()
    transaction.on_commit(lambda: stored_folder_delete(folder))


def membership_set(*, project: Project, username: str, role: str, actor: AbstractBaseUser | None = None) -> Membership:
    """Adds a user to the project or changes their role; `actor` (who did it) goes into the audit log."""
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ValidationError(NO_SUCH_USER_MESSAGE)
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            project=project, user=user, defaults={"role": role}
        )
        before = None if created else membership.role
        if membership.role == Role.OWNER and role != Role.OWNER:
            _ensure_another_owner(project, membership)
        membership.role = role
        membership.save(update_fields=["role"])
        if before != role:
            audit_record(
                project=project,
                user=actor,
                action=AuditAction.MEMBER_SET,
                target=user.get_username(),
                before={"role": before},
                after={"role": role},
            )
    return membership


def membership_remove(*, project: Project, membership: Membership, actor: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        if membership.role == Role.OWNER:
            _ensure_another_owner(project, membership)
        membership.delete()
        audit_record(
            project=project,
            user=actor,
            action=AuditAction.MEMBER_REMOVE,
            target=membership.user.get_username(),
            before={"role": membership.role},
            after={"role": None},
        )


def _ensure_another_owner(project: Project, membership: Membership) -> None:
    others = Membership.objects.filter(project=project, role=Role.OWNER).exclude(pk=membership.pk)
    if not others.exists():
        raise ValidationError(LAST_OWNER_MESSAGE)


def defect_class_create(*, project: Project, name: str, colour: str = "") -> DefectClass:
    if not colour:
        colour = PALETTE[DefectClass.objects.filter(project=project).count() % len(PALETTE)]
    defect_class = DefectClass(project=project, name=name.strip(), colour=colour)
    defect_class.full_clean()
    defect_class.save()
    return defect_class


def defect_class_get_or_create(*, project: Project, name: str) -> DefectClass:
    existing = DefectClass.objects.filter(project=project, name=name).first()
    return existing or defect_class_create(project=project, name=name)


def defect_class_update(*, defect_class: DefectClass, name: str, colour: str) -> DefectClass:
    defect_class.name = name.strip()
    defect_class.colour = colour
    defect_class.full_clean()
    defect_class.save()
    return defect_class


def defect_class_delete(*, defect_class: DefectClass) -> None:
    try:
        defect_class.delete()
    except ProtectedError:
        raise ValidationError(CLASS_IN_USE_MESSAGE) from None

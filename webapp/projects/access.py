"""Who may do what in a project. Strangers get 404 (a project's existence is not revealed); members whose role
does not allow an action get 403."""

from __future__ import annotations

import enum
import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from webapp.projects.models import Membership, Project, Role


class Action(enum.Enum):
    VIEW = "view"
    EDIT_DATA = "edit_data"  # upload, label, annotate, move between splits, defect classes
    ANNOTATE = "annotate"  # draw and correct labels and masks in the editor (reviewers correct what they review)
    TRAIN = "train"
    REVIEW = "review"
    MANAGE = "manage"  # rename, delete, members
    AUDIT = "audit"  # read the project's audit log (everyone who can change something in the project)


ALLOWED_ROLES: dict[Action, frozenset[str]] = {
    Action.VIEW: frozenset(Role.values),
    Action.EDIT_DATA: frozenset({Role.OWNER, Role.ANNOTATOR}),
    Action.ANNOTATE: frozenset({Role.OWNER, Role.ANNOTATOR, Role.REVIEWER}),
    Action.TRAIN: frozenset({Role.OWNER, Role.ANNOTATOR}),
    Action.REVIEW: frozenset({Role.OWNER, Role.REVIEWER}),
    Action.MANAGE: frozenset({Role.OWNER}),
    Action.AUDIT: frozenset({Role.OWNER, Role.ANNOTATOR, Role.REVIEWER}),
}


def role_allows(role: str, action: Action) -> bool:
    return role in ALLOWED_ROLES[action]


def project_for(
    user: AbstractBaseUser, public_id: uuid.UUID | str, action: Action = Action.VIEW
) -> tuple[Project, str]:
    """The project and the user's role in it. Raises Http404 for non-members and PermissionDenied when the
    role does not allow `action`."""
    membership = (
        Membership.objects.select_related("project").filter(project__public_id=public_id, user_id=user.pk).first()
    )
    if membership is None:
        raise Http404("No such project")
    if not role_allows(membership.role, action):
        raise PermissionDenied(f"A {membership.role} cannot {action.value.replace('_', ' ')} in this project.")
    return membership.project, membership.role

"""Reads about projects."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from webapp.images.models import Label
from webapp.projects.models import Membership, Project


def project_list_for(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """The user's projects with image counts per label and the user's role."""
    role = Membership.objects.filter(project=OuterRef("pk"), user_id=user.pk).values("role")[:1]
    return (
        Project.objects.filter(memberships__user_id=user.pk)
        .annotate(
            role=Subquery(role),
            image_count=Count("images", distinct=True),
            good_count=Count("images", filter=Q(images__label=Label.GOOD), distinct=True),
            defect_count=Count("images", filter=Q(images__label=Label.DEFECT), distinct=True),
            unlabelled_count=Count("images", filter=Q(images__label=Label.UNLABELLED), distinct=True),
        )
        .order_by("name", "id")
    )

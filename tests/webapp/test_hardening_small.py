"""Issue 13, finding 6 ("smaller ones"): project list pagination, reserved defect class names, the editor save's
payload limits, the login throttle, CSP and HSTS, file names a multipart parser drops, and parallel uploads."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.projects.models import Membership, Project, Role
from webapp.projects.views import PROJECTS_PER_PAGE

# --- project list pagination -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_project_list_is_paginated_with_a_fixed_number_of_queries(client, owner, django_assert_num_queries):
    total = PROJECTS_PER_PAGE * 2 + 7
    projects = Project.objects.bulk_create([Project(name=f"Part {i:03d}", created_by=owner) for i in range(total)])
    Membership.objects.bulk_create([Membership(project=p, user=owner, role=Role.OWNER) for p in projects])
    client.force_login(owner)

    pages = []
    for number in (1, 2, 3):
        # session, user, count, one page of projects with their counts: the same for every page and any total
        with django_assert_num_queries(4):
            pages.append(client.get(reverse("project_list"), {"page": number}).content.decode())
    rows = [page.count('<td><a href="/projects/') for page in pages]
    assert rows == [PROJECTS_PER_PAGE, PROJECTS_PER_PAGE, 7]
    assert "Part 000" in pages[0] and f"Part {PROJECTS_PER_PAGE:03d}" not in pages[0]
    assert f"Part {total - 1:03d}" in pages[2]
    assert 'href="?page=2"' in pages[0] and "Page 1 of 3" in pages[0]
    assert 'href="?page=2"' in pages[2] and 'href="?page=4"' not in pages[2]

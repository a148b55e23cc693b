"""The review queue (one item at a time, keyboard driven), an item with its audit trail, and the policy form."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.projects.access import Action, project_for, role_allows
from webapp.review import selectors, services
from webapp.review.forms import ReviewPolicyForm
from webapp.review.models import Decision


def _filters(data) -> dict[str, str]:
    return {
        "age": data.get("age", "") if data.get("age", "") in selectors.AGES else "",
        "call": data.get("call", "") if data.get("call", "") in selectors.CALLS else "",
    }


def _queue_url(project_id: uuid.UUID, filters: dict[str, str], **extra) -> str:
    query = urlencode({k: v for k, v in {**filters, **extra}.items() if v})
    return reverse("review_queue", kwargs={"project_id": project_id}) + (f"?{query}" if query else "")


def review_queue(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """The next pending item for this reviewer, claimed so a second reviewer is shown another one."""
    project, role = project_for(request.user, project_id, Action.REVIEW)
    filters = _filters(request.GET)
    after = request.GET.get("after", "")
    item = selectors.next_item_for(
        project=project, user=request.user, after=int(after) if after.isdigit() else None, **filters
    )
    if item is not None and not services.review_item_claim(item=item, user=request.user):
        item = None  # taken between the read and the claim: a reload shows the next one
    policy = selectors.policy_of(project=project)
    context = {
        "project": project,
        "role": role,
        "item": item,
        "filters": filters,
        "ages": selectors.AGES,
        "summary": selectors.review_summary(project=project),
        "policy": policy,
        "policy_form": ReviewPolicyForm(
            initial={
                "enabled": policy.enabled,
                "band_low": policy.band_low,
                "band_high": policy.band_high,
                "audit_percent": policy.audit_percent,
                "split": policy.split,
            }
        ),
        "can_manage": role_allows(role, Action.MANAGE),
        "can_train": role_allows(role, Action.TRAIN),
        "skip_url": _queue_url(project.public_id, filters, after=item.id) if item else "",
        "place": selectors.queue_place(project=project, item=item, **filters) if item else None,
        "last_item_id": request.GET.get("last", ""),
    }
    return render(request, "review/queue.html", context)


@require_POST
def review_decide(request: HttpRequest, project_id: uuid.UUID, item_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.REVIEW)
    item = selectors.item_in_project(project=project, item_id=item_id)
    if item is None:
        raise Http404("No such review item")
    filters = _filters(request.POST)
    decision = request.POST.get("decision", "")
    try:
        services.review_item_decide(item=item, decision=decision, user=request.user)
    except services.ReviewConflict as exc:
        messages.warning(request, str(exc))
        return redirect(_queue_url(project.public_id, filters))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(_queue_url(project.public_id, filters))
    if decision == Decision.MASK:
        return redirect("annotation_editor", project_id=project.public_id, image_id=item.image.public_id)
    return redirect(_queue_url(project.public_id, filters, last=item.id))


def review_item(request: HttpRequest, project_id: uuid.UUID, item_id: int) -> HttpResponse:
    """One item and its audit trail: every decision with reviewer, time, before and after."""
    project, role = project_for(request.user, project_id)
    item = selectors.item_in_project(project=project, item_id=item_id)
    if item is None:
        raise Http404("No such review item")
    context = {"project": project, "role": role, "item": item, "decisions": selectors.decisions_of(item=item)}
    return render(request, "review/item.html", context)


@require_POST
def review_policy_save(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    form = ReviewPolicyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the review policy: " + "; ".join(e for es in form.errors.values() for e in es))
        return redirect("review_queue", project_id=project.public_id)
    try:
        services.review_policy_save(project=project, user=request.user, **form.cleaned_data)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Review policy saved.")
    return redirect("review_queue", project_id=project.public_id)

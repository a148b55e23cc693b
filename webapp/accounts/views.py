from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from webapp.accounts.forms import NewUserForm


def staff_required(view: Callable) -> Callable:
    """403 for signed-in people who are not administrators. (Django's staff_member_required sends them, and
    anonymous visitors, to the admin's own login page instead of the app's.) Sign-in itself is the middleware's."""

    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return guarded


@staff_required
def user_list(request: HttpRequest) -> HttpResponse:
    """Administrators create accounts; there is no public sign-up on a factory network."""
    form = NewUserForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        user.is_staff = form.cleaned_data["is_staff"]
        user.save()
        messages.success(request, f"Created user {user.username}.")
        return redirect("user_list")
    return render(request, "accounts/users.html", {"form": form, "users": User.objects.order_by("username")})

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from webapp.accounts.forms import NewUserForm


@staff_member_required
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

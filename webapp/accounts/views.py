from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from webapp.accounts.forms import NewUserForm, SignInForm


class SignInView(auth_views.LoginView):
    """Django's login page with the sign-in throttle (webapp.accounts.throttle): a refused attempt is a 429."""

    authentication_form = SignInForm

    def form_invalid(self, form: SignInForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.throttle_wait:
            response.status_code = 429
            response["Retry-After"] = str(form.throttle_wait)
        return response


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

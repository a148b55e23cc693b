from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.models import User


class NewUserForm(UserCreationForm):
    is_staff = forms.BooleanField(required=False, label="Administrator (can create users)")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


THROTTLED = "throttled"
WRONG_PASSWORD = "Your user name and password didn't match. Please try again."


class ThrottledSignInMixin:
    """Checks the sign-in throttle before the password is looked at, and counts the outcome afterwards."""

    throttle_wait = 0  # seconds, when this attempt was refused

    def clean(self):
        from webapp.accounts import throttle

        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not username or not password:
            return super().clean()
        address = throttle.client_address(self.request)
        wait = throttle.login_attempt_wait(username=username, address=address)
        if wait:
            self.throttle_wait = wait
            raise forms.ValidationError(throttle.TOO_MANY_ATTEMPTS.format(seconds=wait), code=THROTTLED)
        try:
            cleaned = super().clean()
        except forms.ValidationError as exc:
            if exc.code == "invalid_login":
                throttle.login_failure_record(username=username, address=address)
            raise
        throttle.login_success_record(username=username)
        return cleaned


class SignInForm(ThrottledSignInMixin, AuthenticationForm):
    error_messages = {**AuthenticationForm.error_messages, "invalid_login": WRONG_PASSWORD}


class AdminSignInForm(ThrottledSignInMixin, AdminAuthenticationForm):
    """The admin site's login page, throttled the same way (it is another door to the same passwords)."""

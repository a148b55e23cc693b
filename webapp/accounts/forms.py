from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User


class NewUserForm(UserCreationForm):
    is_staff = forms.BooleanField(required=False, label="Administrator (can create users)")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

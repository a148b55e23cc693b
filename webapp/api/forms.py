from __future__ import annotations

from django import forms

from webapp.api.models import Scope


class TokenForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What uses it, e.g. “line 3 camera PC”.")
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.PREDICT]
    )

from django import forms

from webapp.audit.models import AuditAction


class AuditFilterForm(forms.Form):
    user = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="User")
    action = forms.ChoiceField(required=False, choices=[("", "any"), *AuditAction.choices], label="Action")
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, users=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].choices = [("", "anyone"), *((u.pk, u.username) for u in users)]

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError(DATES_REVERSED)
        return data


DATES_REVERSED = "The start date is after the end date."

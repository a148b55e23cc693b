from django import forms

from webapp.projects.models import Role, colour_validator


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class RenameForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    # The least privilege unless the owner picks more: a slip of the mouse must not hand out ownership.
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class DefectClassForm(forms.Form):
    name = forms.CharField(max_length=64, strip=True)
    colour = forms.CharField(max_length=7, required=False, validators=[colour_validator])


class DeleteForm(forms.Form):
    confirm_name = forms.CharField(max_length=120)

import json

from django import template

register = template.Library()


@register.filter
def audit_value(value) -> str:
    """A before/after value for people: text as is, numbers and lists and counts as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "–"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

"""The project's tabs, only those the user's role can use (the views enforce the same rules on every request)."""

from django import template

from webapp.projects.access import Action, role_allows
from webapp.projects.models import Membership

register = template.Library()

# (url name, label, the action the page is for): a tab whose page the role cannot use is not shown.
TABS = (
    ("project_detail", "Overview", Action.VIEW),
    ("image_grid", "Images", Action.VIEW),
    ("image_upload", "Upload", Action.EDIT_DATA),
    ("dataset_transfer", "Import / export", Action.VIEW),
    ("train", "Train", Action.TRAIN),
    ("model_home", "Model", Action.VIEW),
    ("trial", "Try it", Action.TRAIN),
    ("api_docs", "API", Action.VIEW),
    ("review_queue", "Review", Action.REVIEW),
    ("station_list", "Stations", Action.VIEW),
    ("audit_log", "Audit log", Action.AUDIT),
    ("project_settings", "Settings", Action.VIEW),
)


@register.simple_tag(takes_context=True)
def project_tabs(context, project) -> list[tuple[str, str]]:
    """(url name, label) of the tabs for the user's role; the page's own `role` is used when it passed one."""
    role = project_role(context, project)
    return [(name, label) for name, label, action in TABS if role and role_allows(role, action)]


def project_role(context, project) -> str | None:
    """The page's `role` when the view passed one, else the user's membership, looked up once per page."""
    if context.get("role"):
        return context["role"]
    cache = context["request"].__dict__.setdefault("_kensa_project_roles", {})
    if project.pk not in cache:
        user = context["request"].user
        cache[project.pk] = (
            Membership.objects.filter(project=project, user_id=user.pk).values_list("role", flat=True).first()
        )
    return cache[project.pk]


@register.simple_tag(takes_context=True)
def project_can(context, project, action: str) -> bool:
    """Whether the user's role in `project` allows `action` (an Action value such as "manage")."""
    role = project_role(context, project)
    return bool(role) and role_allows(role, Action(action))

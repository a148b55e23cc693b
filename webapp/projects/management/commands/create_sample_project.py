from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.samples import sample_project_create


class Command(BaseCommand):
    help = "Create the sample project (synthetic discs with scratches, dents and stains) for a first look."

    def add_arguments(self, parser):
        parser.add_argument("--owner", help="user name of the owner (default: the first administrator)")

    def handle(self, *args, owner: str | None, **options):
        users = get_user_model()
        user = users.objects.filter(username=owner).first() if owner else None
        user = user or users.objects.filter(is_superuser=True).order_by("id").first()
        if user is None:
            raise CommandError("No owner: create an administrator first (python manage.py ensure_admin).")
        project = sample_project_create(owner=user)
        self.stdout.write(self.style.SUCCESS(f"Created {project.name!r} with {project.images.count()} images."))

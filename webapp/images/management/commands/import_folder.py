"""python manage.py import_folder --project NAME PATH: imports a server-side folder (MVTec AD layout understood)."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.images.intake.ingest import REJECTED, folder_ingest
from webapp.projects.models import Project
from webapp.projects.services import project_create


class Command(BaseCommand):
    help = "Import a folder of images (MVTec AD layout: train/good, test/<defect>, ground_truth/...) into a project."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True, help="project name; created if it does not exist")
        parser.add_argument("--owner", help="user name owning a new project (default: the first administrator)")

    def handle(self, *args, path: Path, project: str, owner: str | None, **options):
        if not path.is_dir():
            raise CommandError(f"{path} is not a folder.")
        users = get_user_model()
        user = users.objects.filter(username=owner).first() if owner else None
        if owner and user is None:
            raise CommandError(f"No user named {owner!r}.")
        target = Project.objects.filter(name=project).order_by("id").first()
        if target is None:
            user = user or users.objects.filter(is_superuser=True).order_by("id").first()
            if user is None:
                raise CommandError("No owner for the new project: create an administrator first (ensure_admin).")
            target = project_create(name=project, owner=user)
            self.stdout.write(f"Created project {project!r}.")
        report = folder_ingest(project=target, user=user, root=path)
        for result in report.results:
            if result.status == REJECTED:
                self.stderr.write(f"{result.name}: {result.message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.added} added, {report.duplicates} already present, {report.rejected} rejected."
            )
        )

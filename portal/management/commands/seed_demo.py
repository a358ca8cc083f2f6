from django.core.management.base import BaseCommand

from portal import demo


class Command(BaseCommand):
    help = "Create (or refresh) the demo organization, users and each app's demo data."

    def handle(self, *args, **options):
        context = demo.seed()
        self.stdout.write(self.style.SUCCESS(f"Demo organization: {context.organization.name}"))
        for email, password, role in demo.logins():
            self.stdout.write(f"  {email:<22} {password}   ({role})")

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal: organizations and accounts"

    def ready(self) -> None:
        from portal import pg_timestamps

        pg_timestamps.connect()  # psycopg's C loader for timestamps where it equals Django's

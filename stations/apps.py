from django.apps import AppConfig


class StationsConfig(AppConfig):
    name = "stations"
    verbose_name = "Stations and OCPP"

    def ready(self) -> None:
        import ocpp.messages

        # The ocpp library validates every message against its JSON schema in the default
        # thread pool. Validation is pure Python under the GIL, so the thread buys no
        # parallelism, only a hop per message (two per command and answer); frames are at
        # most 64 KiB (the server's websocket limit), so inline validation stays short.
        ocpp.messages.ASYNC_VALIDATION = False

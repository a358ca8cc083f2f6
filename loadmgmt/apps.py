from django.apps import AppConfig


class LoadmgmtConfig(AppConfig):
    name = "loadmgmt"
    verbose_name = "Load management"

"""Filled in by the access-and-prices work."""

org_urlpatterns: list = []
urlpatterns: list = []

"""Merge meter samples of the same station, connector, instant and context into one row (the
oldest), so that 0009 can make that combination unique. Such rows came from a MeterValues a
station sent again after an answer it did not get, or from one sent per measurand."""

from django.db import migrations
from django.db.models import Count

KEY = ("station_id", "connector_id", "time", "context")
MERGED = (
    "session_id",
    "energy_wh",
    "power_w",
    "current_l1",
    "current_l2",
    "current_l3",
    "voltage",
    "soc",
)


def merge_duplicates(apps, schema_editor):
    MeterSample = apps.get_model("stations", "MeterSample")
    # order_by(): the model's ordering (time, id) would otherwise split every group.
    groups = (
        MeterSample.objects.order_by().values(*KEY).annotate(rows=Count("id")).filter(rows__gt=1)
    )
    for group in groups.iterator():
        rows = list(MeterSample.objects.filter(**{k: group[k] for k in KEY}).order_by("id"))
        kept, later = rows[0], rows[1:]
        for row in later:  # a later message's values win where it has them, as on insert
            for column in MERGED:
                if getattr(row, column) is not None:
                    setattr(kept, column, getattr(row, column))
        kept.save(update_fields=[c.removesuffix("_id") for c in MERGED])
        MeterSample.objects.filter(pk__in=[row.pk for row in later]).delete()


class Migration(migrations.Migration):
    dependencies = [("stations", "0007_relay")]

    # Its own migration (transaction): on PostgreSQL the deferred foreign-key checks of these
    # updates would otherwise still be pending when 0009 alters the table.
    operations = [migrations.RunPython(merge_duplicates, migrations.RunPython.noop)]

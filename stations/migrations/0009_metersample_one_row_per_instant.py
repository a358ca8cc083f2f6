from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("stations", "0008_metersample_merge_duplicates")]

    operations = [
        migrations.AddConstraint(
            model_name="metersample",
            constraint=models.UniqueConstraint(
                fields=("station", "connector_id", "time", "context"),
                name="metersample_one_row_per_instant",
            ),
        ),
    ]

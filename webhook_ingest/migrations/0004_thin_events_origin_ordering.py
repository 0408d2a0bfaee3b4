"""Thin events, where an event came from, and per-object ordering.

New columns have constant defaults (no table rewrite). The index on
`snapshot_event` covers only thin twins (the column is empty for every other
event) and is built concurrently so that ingest keeps writing meanwhile.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('webhook_ingest', '0003_retry_scheduled'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhookevent',
            name='snapshot_event',
            field=models.CharField(blank=True, help_text="A thin twin's snapshot event id.", max_length=255),
        ),
        migrations.AddField(
            model_name='webhookevent',
            name='source',
            field=models.CharField(choices=[('delivery', 'Delivery (signed)'), ('backfill', 'Backfill (from the Events API, unsigned)'), ('reconciliation', 'Reconciliation (from the Events API, unsigned)')], default='delivery', max_length=16),
        ),
        migrations.AddField(
            model_name='webhookevent',
            name='style',
            field=models.CharField(choices=[('snapshot', 'Snapshot'), ('thin', 'Thin')], default='snapshot', max_length=16),
        ),
        migrations.AddField(
            model_name='webhookevent',
            name='waiting_for',
            field=models.CharField(blank=True, help_text='With ORDERING: the earlier event (or the object) this one waits for.', max_length=255),
        ),
        migrations.AlterField(
            model_name='webhookevent',
            name='object_id',
            field=models.CharField(blank=True, help_text='data.object.id of a snapshot event, related_object.id of a thin one.', max_length=255, verbose_name='object id'),
        ),
        AddIndexConcurrently(
            model_name='webhookevent',
            index=models.Index(condition=models.Q(('snapshot_event', ''), _negated=True), fields=['snapshot_event'], name='webhook_event_snapshot_event'),
        ),
    ]

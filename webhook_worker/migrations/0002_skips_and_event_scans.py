"""Skipped handlers in the attempt history, and the Events API scans' checkpoints.

The index on skipped attempts is partial (few attempts skip any handler) and
built concurrently, so workers keep recording attempts meanwhile.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('webhook_worker', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='EventScan',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('backfill', 'Backfill'), ('reconciliation', 'Reconciliation')], max_length=16)),
                ('endpoint', models.CharField(max_length=64)),
                ('type_prefix', models.CharField(blank=True, max_length=255)),
                ('failed_only', models.BooleanField(default=False)),
                ('since', models.DateTimeField(help_text='Events created at or after this are scanned.')),
                ('checkpoint', models.DateTimeField(help_text='Every event created before this is recorded.')),
                ('cursor', models.CharField(blank=True, max_length=1024)),
                ('slice_end', models.DateTimeField(blank=True, null=True)),
                ('state', models.CharField(choices=[('running', 'Running'), ('interrupted', 'Interrupted'), ('finished', 'Finished')], default='running', max_length=16)),
                ('found', models.PositiveIntegerField(default=0)),
                ('recorded', models.PositiveIntegerField(default=0)),
                ('already_present', models.PositiveIntegerField(default=0)),
                ('pages', models.PositiveIntegerField(default=0)),
                ('started_at', models.DateTimeField()),
                ('updated_at', models.DateTimeField()),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True)),
            ],
            options={
                'verbose_name': 'Events API scan',
            },
        ),
        migrations.AddField(
            model_name='webhookattempt',
            name='note',
            field=models.TextField(blank=True, help_text='Which handlers were skipped, and why.'),
        ),
        migrations.AddField(
            model_name='webhookattempt',
            name='skipped',
            field=models.CharField(blank=True, choices=[('', '—'), ('superseded', 'Superseded'), ('twin', 'Twin handled')], default='', help_text='Why handlers were skipped in this attempt, if any were.', max_length=16),
        ),
        migrations.AlterField(
            model_name='webhookattempt',
            name='outcome',
            field=models.CharField(choices=[('running', 'Running'), ('succeeded', 'Succeeded'), ('retry', 'Failed, retry scheduled'), ('failed', 'Failed, dead-lettered'), ('lost', 'Worker lost'), ('superseded', 'Skipped: superseded'), ('twin', 'Skipped: its twin was handled')], default='running', max_length=16),
        ),
        migrations.AlterField(
            model_name='webhookattempt',
            name='trigger',
            field=models.CharField(choices=[('delivery', 'First delivery'), ('retry', 'Retry'), ('sweeper', 'Sweeper'), ('manual', 'Manual'), ('order', 'Its turn (ordering)'), ('backfill', 'Backfill'), ('reconciliation', 'Reconciliation')], max_length=16),
        ),
        AddIndexConcurrently(
            model_name='webhookattempt',
            index=models.Index(condition=models.Q(('skipped', ''), _negated=True), fields=['skipped', 'event'], name='webhook_attempt_skipped'),
        ),
        migrations.AddIndex(
            model_name='eventscan',
            index=models.Index(fields=['kind', 'endpoint'], name='webhook_scan_kind_endpoint'),
        ),
    ]

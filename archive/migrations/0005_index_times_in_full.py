"""Study and series times in the index as HHMMSS[.F…] (0800 becomes 080000), so TM ranges compare right.

Only the index columns change; the stored objects and their DICOM JSON keep the value as received.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def index_time(value: str) -> str:
    # A copy of archive.dicomfile.index_time as it was when this migration was written.
    text = value.replace(":", "")
    whole, dot, fraction = text.partition(".")
    if not whole.isascii() or not whole.isdigit() or len(whole) not in (2, 4, 6) or (dot and len(whole) != 6):
        return value
    return whole.ljust(6, "0") + dot + fraction


def normalise(apps: Any, schema_editor: Any) -> None:
    for model, column in (("Study", "study_time"), ("Series", "series_time")):
        manager = apps.get_model("archive", model).objects
        changed = []
        for row in manager.exclude(**{column: ""}).only("pk", column).iterator(chunk_size=2000):
            value = getattr(row, column)
            if index_time(value) != value:
                setattr(row, column, index_time(value))
                changed.append(row)
            if len(changed) >= 2000:
                manager.bulk_update(changed, [column])
                changed = []
        if changed:
            manager.bulk_update(changed, [column])


class Migration(migrations.Migration):
    dependencies = [("archive", "0004_instance_series_index_covered")]

    operations = [migrations.RunPython(normalise, migrations.RunPython.noop)]

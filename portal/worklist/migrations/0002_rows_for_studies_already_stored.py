"""Give the studies stored before the worklist existed their rows (as `manage.py worklist_sync` would)."""

from django.db import migrations
from django.utils import timezone


def add_rows(apps, schema_editor):
    from portal.worklist.rows import patient_age

    Study = apps.get_model("archive", "Study")
    Series = apps.get_model("archive", "Series")
    WorklistItem = apps.get_model("worklist", "WorklistItem")
    known = set(WorklistItem.objects.values_list("study_id", flat=True))
    now = timezone.now()
    by_patient = {}
    rows = []
    for study in Study.objects.select_related("patient", "site").order_by("pk").iterator(chunk_size=2000):
        by_patient.setdefault(study.patient_id, []).append((study.pk, study.study_date, study.created_at))
        if study.pk in known:
            continue
        patient = study.patient
        body_part = (
            Series.objects.filter(study_id=study.pk)
            .exclude(body_part_examined="")
            .order_by("series_number", "id")
            .values_list("body_part_examined", flat=True)
            .first()
            or ""
        )
        rows.append(
            WorklistItem(
                study_id=study.pk,
                study_instance_uid=study.study_instance_uid,
                status="ready",
                patient_name=patient.patient_name,
                patient_name_search=patient.patient_name_search,
                patient_id=patient.patient_id,
                patient_age=patient_age(study.attributes or {}, patient.patient_birth_date, study.study_date),
                patient_sex=patient.patient_sex,
                modality=study.modalities_in_study,
                body_part=body_part,
                description=study.study_description,
                accession_number=study.accession_number,
                site_id=study.site_id,
                site_code=study.site.code if study.site else "",
                study_date=study.study_date,
                arrived_at=study.created_at,
                image_count=study.number_of_instances,
                updated_at=now,
            )
        )
    priors = {}
    for studies in by_patient.values():
        for pk, day, created in studies:
            priors[pk] = sum(1 for other, d, c in studies if other != pk and (d, c) < (day, created))
    for row in rows:
        row.priors_count = priors.get(row.study_id, 0)
    WorklistItem.objects.bulk_create(rows, batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [("worklist", "0001_worklist_items_routing_saved")]

    operations = [migrations.RunPython(add_rows, migrations.RunPython.noop)]

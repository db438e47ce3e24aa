"""STOW-RS: storing instances, reporting failures, idempotence and conflicts."""

from __future__ import annotations

import hashlib
import io
import json

import pydicom
import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import Instance, Study
from archive.storage.registry import get_storage
from tests.conftest import multipart, stow


def sops(response) -> tuple[list[str], list[tuple[str, int]]]:
    body = json.loads(response.content)
    ok = [i["00081155"]["Value"][0] for i in body.get("00081199", {}).get("Value", [])]
    failed = [
        ((i["00081155"].get("Value") or [""])[0], i["00081197"]["Value"][0])
        for i in body.get("00081198", {}).get("Value", [])
    ]
    return ok, failed


@pytest.mark.django_db
def test_it_stores_a_series_and_keeps_the_exact_bytes(upload_client: Client) -> None:
    spec = StudySpec()
    parts = make_series(spec, "CT", count=3)
    response = stow(upload_client, parts)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    ok, failed = sops(response)
    assert len(ok) == 3 and not failed
    for raw in parts:
        sop = pydicom.dcmread(__import__("io").BytesIO(raw)).SOPInstanceUID
        inst = Instance.objects.get(sop_instance_uid=sop)
        assert inst.sha256 == hashlib.sha256(raw).hexdigest()
        with get_storage(inst.tier).open(inst.storage_key) as fh:
            assert fh.read() == raw
    study = Study.objects.get(study_instance_uid=spec.study_uid)
    assert (study.number_of_series, study.number_of_instances, study.modalities_in_study) == (1, 3, "CT")


@pytest.mark.django_db
def test_it_is_idempotent_when_the_same_instance_is_sent_twice(upload_client: Client) -> None:
    part = make_instance(StudySpec())
    assert stow(upload_client, [part]).status_code == 200
    again = stow(upload_client, [part])
    assert again.status_code == 200
    assert Instance.objects.count() == 1
    assert Study.objects.get().number_of_instances == 1


@pytest.mark.django_db
def test_the_same_data_set_under_other_file_meta_is_a_duplicate_and_the_first_copy_stays(upload_client: Client) -> None:
    part = make_instance(StudySpec(), sop_uid="1.2.3.4.6")
    ds = pydicom.dcmread(io.BytesIO(part))
    ds.file_meta.ImplementationVersionName = "OTHER_GATEWAY"  # another sender's File Meta, same data set
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    resent = buffer.getvalue()
    assert resent != part
    assert stow(upload_client, [part]).status_code == 200
    response = stow(upload_client, [resent])
    assert response.status_code == 200
    ok, failed = sops(response)
    assert ok == ["1.2.3.4.6"] and failed == []
    inst = Instance.objects.get()
    assert inst.sha256 == hashlib.sha256(part).hexdigest()
    assert list(get_storage().keys()) == [inst.storage_key]


@pytest.mark.django_db
def test_it_reports_a_conflict_and_keeps_the_stored_object(upload_client: Client) -> None:
    spec = StudySpec()
    first = make_instance(spec, sop_uid="1.2.3.4.5")
    other = make_instance(spec, sop_uid="1.2.3.4.5", extra={"SeriesDescription": "DIFFERENT"})
    assert stow(upload_client, [first]).status_code == 200
    response = stow(upload_client, [other])
    assert response.status_code == 409
    ok, failed = sops(response)
    assert ok == [] and failed == [("1.2.3.4.5", 0x0111)]
    inst = Instance.objects.get()
    assert inst.sha256 == hashlib.sha256(first).hexdigest()


@pytest.mark.django_db
def test_it_reports_an_instance_whose_study_disagrees_with_the_url(upload_client: Client) -> None:
    spec = StudySpec()
    good = make_instance(spec)
    stranger = make_instance(StudySpec(), sop_uid="1.2.3.99")
    response = stow(upload_client, [good, stranger], study=spec.study_uid)
    assert response.status_code == 202
    ok, failed = sops(response)
    assert len(ok) == 1 and failed == [("1.2.3.99", 0xA900)]
    assert not Instance.objects.filter(sop_instance_uid="1.2.3.99").exists()


@pytest.mark.django_db
def test_it_reports_garbage_and_truncated_parts_without_storing_them(upload_client: Client, isolated_storage) -> None:
    good = make_instance(StudySpec())
    truncated = make_instance(StudySpec())[:400]
    response = stow(upload_client, [b"this is not dicom at all", good, truncated])
    assert response.status_code == 202
    ok, failed = sops(response)
    assert len(ok) == 1
    assert [code for _, code in failed] == [0xC000, 0xC000]
    assert Instance.objects.count() == 1
    files = [p for p in isolated_storage.rglob("*") if p.is_file()]
    assert len(files) == 1, "nothing half-written or refused is left in storage"


@pytest.mark.django_db
def test_it_answers_409_when_nothing_could_be_stored(upload_client: Client) -> None:
    response = stow(upload_client, [b"garbage"])
    assert response.status_code == 409


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ctype,status",
    [
        ("application/json", 415),
        ('multipart/related; type="application/dicom+xml"; boundary=abc', 415),
        ('multipart/related; type="application/dicom"', 400),
        ('multipart/related; type="application/dicom"; boundary=neverthere', 400),
    ],
)
def test_it_refuses_wrong_media_types_and_missing_boundaries(upload_client: Client, ctype: str, status: int) -> None:
    response = upload_client.post("/dicom-web/studies", b"--x\r\n\r\nabc", content_type=ctype)
    assert response.status_code == status
    assert "detail" in json.loads(response.content)


@pytest.mark.django_db
def test_it_keeps_complete_parts_when_the_closing_boundary_is_missing(upload_client: Client) -> None:
    good = make_instance(StudySpec())
    body, ctype = multipart([good, make_instance(StudySpec())])
    cut = body[: body.rindex(b"--XyZ123boundary") - 2000]
    response = upload_client.post("/dicom-web/studies", cut, content_type=ctype, HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 202
    assert Instance.objects.count() == 1
    assert "Warning" in response


@pytest.mark.django_db
def test_it_refuses_uids_with_path_tricks(upload_client: Client) -> None:
    evil = make_instance(StudySpec(study_uid="1.2.3"), extra={"SOPInstanceUID": "../../etc/passwd"})
    response = stow(upload_client, [evil])
    assert response.status_code == 409
    assert Instance.objects.count() == 0
    assert stow(upload_client, [make_instance(StudySpec())], study="1.2.abc").status_code == 400
    assert stow(upload_client, [make_instance(StudySpec())], study="..%2F..").status_code == 404


@pytest.mark.django_db
def test_it_requires_authentication(client: Client) -> None:
    response = stow(client, [make_instance(StudySpec())])
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_it_refuses_users_without_the_store_permission(reader_client: Client) -> None:
    assert stow(reader_client, [make_instance(StudySpec())]).status_code == 403


@pytest.mark.django_db
def test_it_answers_406_when_the_client_will_not_take_json(upload_client: Client) -> None:
    body, ctype = multipart([make_instance(StudySpec())])
    response = upload_client.post("/dicom-web/studies", body, content_type=ctype, HTTP_ACCEPT="application/dicom+xml")
    assert response.status_code == 406


@pytest.mark.django_db
def test_it_keeps_a_hostile_patient_name_verbatim(upload_client: Client) -> None:
    name = "<script>alert(1)</script>" + "A" * 10000
    part = make_instance(StudySpec(patient_name=name))
    assert stow(upload_client, [part]).status_code == 200
    metadata = json.loads(Instance.objects.get().metadata)
    assert metadata["00100010"]["Value"][0]["Alphabetic"] == name


@pytest.mark.django_db
def test_it_refuses_to_add_instances_to_another_sites_study(site_a_study, outsider_client: Client) -> None:
    spec = site_a_study["spec"]
    intruder = make_instance(spec, sop_uid="1.2.3.4.777")
    assert stow(outsider_client, [intruder], study=spec.study_uid).status_code == 404
    response = stow(outsider_client, [intruder])
    assert response.status_code == 409
    _, failed = sops(response)
    assert failed == [("1.2.3.4.777", 0x0124)]
    assert not Instance.objects.filter(sop_instance_uid="1.2.3.4.777").exists()


@pytest.mark.django_db
def test_a_new_study_belongs_to_the_senders_site_whatever_its_institution_says(
    outsider, outsider_client, general_site
) -> None:
    spec = StudySpec(institution=general_site.institution_names.splitlines()[0])
    assert stow(outsider_client, [make_instance(spec)]).status_code == 200
    assert Study.objects.get(study_instance_uid=spec.study_uid).site.code == "elsewhere"


@pytest.mark.django_db
def test_the_institution_decides_when_configured(settings, outsider_client, general_site) -> None:
    settings.PACS_STUDY_SITE_SOURCE = "institution"
    spec = StudySpec(institution=general_site.institution_names.splitlines()[0])
    assert stow(outsider_client, [make_instance(spec)]).status_code == 200
    assert Study.objects.get(study_instance_uid=spec.study_uid).site == general_site


@pytest.mark.parametrize("single_part", [False, True], ids=["multipart", "single application/dicom"])
def test_it_answers_503_and_indexes_nothing_when_storage_cannot_take_the_bytes(
    upload_client: Client, single_part: bool
) -> None:
    staging = get_storage("hot").staging_dir
    staging.rmdir()
    staging.write_bytes(b"a file where the staging folder should be")  # every write now fails, even as root
    part = make_instance(StudySpec(study_uid="1.2.3.503"))
    if single_part:
        response = upload_client.post(
            "/dicom-web/studies", part, content_type="application/dicom", HTTP_ACCEPT="application/dicom+json"
        )
    else:
        response = stow(upload_client, [part])
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert b"Send it again later" in response.content
    assert not Instance.objects.exists()


class DroppingStream:
    """A request body whose client goes away after ``keep`` bytes."""

    def __init__(self, body: bytes, keep: int) -> None:
        self.body, self.keep, self.sent = body, keep, 0

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.keep:
            raise OSError("client disconnected")
        chunk = self.body[self.sent : min(self.keep, self.sent + (size if size > 0 else len(self.body)))]
        self.sent += len(chunk)
        return chunk


def test_a_client_gone_mid_part_leaves_no_staging_file_behind() -> None:
    from archive.dicomweb.multipart import iter_parts
    from archive.dicomweb.stow import _PartSink

    body, ctype = multipart([make_instance(StudySpec(study_uid="1.2.3.404")), make_instance(StudySpec())])
    boundary = ctype.split("boundary=")[1]
    staging = get_storage("hot").staging_dir
    parts = iter_parts(DroppingStream(body, keep=len(body) * 3 // 4), boundary, _PartSink)
    first = next(parts)
    assert first.sink.writer is not None
    with pytest.raises(OSError, match="disconnected"):
        next(parts)
    first.sink.writer.abort()
    assert list(staging.iterdir()) == []

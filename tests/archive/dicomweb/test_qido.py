"""QIDO-RS: matching, returned attributes, paging, negotiation, access and bad input."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pydicom
import pytest
from django.test import Client
from django.utils import timezone
from pydicom.data import get_charset_files

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import Instance, Study
from archive.query.matching import Level
from audit.models import AuditEvent
from tests.conftest import bearer_client, role_user, stow

JSON = "application/dicom+json"


def charset_name(filename: str) -> tuple[Any, str]:
    """(Specific Character Set, Patient's Name) of one of pydicom's character set test files."""
    ds = pydicom.dcmread(get_charset_files(filename)[0])
    return ds.SpecificCharacterSet, str(ds.PatientName)


def uids(raw: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(raw))
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@pytest.fixture
def archive(upload_client: Client, ct_study: dict[str, Any]) -> dict[str, Any]:
    """Five studies stored through STOW-RS, keyed by a short name."""
    studies: dict[str, Any] = {"jane": ct_study}
    smith = StudySpec(
        patient_name="SMITH^JOHN^A", patient_id="PAT-2", accession="ACC-2", study_date="20230610",
        study_time="141500", description="MR BRAIN", referring="HOUSE^GREGORY",
    )  # fmt: skip
    smith_parts = make_series(smith, "MR", count=2) + make_series(smith, "CT", count=1, series_description="SCOUT")
    latin_set, latin_name = charset_name("chrFren.dcm")
    latin = StudySpec(patient_name=latin_name, patient_id="PAT-3", accession="ACC_3%", study_date="20221231",
                      charset=latin_set, description="CR THORAX")  # fmt: skip
    jp_set, jp_name = charset_name("chrH31.dcm")
    japanese = StudySpec(patient_name=jp_name, patient_id="PAT-4", accession="ACC-4", study_date="20210101")
    bare = StudySpec(patient_name="NOMOD^NINA", patient_id="PAT-5", accession="ACC-5", study_date="")
    parts = {
        "smith": smith_parts,
        "latin": make_series(latin, "CR", count=1),
        "japanese": [make_instance(japanese, "CT", extra={"SpecificCharacterSet": jp_set})],
        "bare": [make_instance(bare, "CT", extra={"Modality": ""})],
    }
    for name, spec in (("smith", smith), ("latin", latin), ("japanese", japanese), ("bare", bare)):
        response = stow(upload_client, parts[name])
        assert response.status_code == 200, response.content
        studies[name] = {"spec": spec, "parts": parts[name]}
    return studies


def get(client: Client, path: str, query: str = "", **headers: Any) -> Any:
    return client.get(f"/dicom-web/{path}" + (f"?{query}" if query else ""), HTTP_ACCEPT=JSON, **headers)


def found(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith(("application/dicom+json", "application/json"))
    return json.loads(response.content)


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return item.get(tag, {}).get("Value", [])


def patient_ids(response: Any) -> set[str]:
    return {values(item, "00100020")[0] for item in found(response)}


# ---------------------------------------------------------------- matching


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"PAT-1", "PAT-2", "PAT-3", "PAT-4", "PAT-5"}),
        ("PatientName=DOE^JANE", {"PAT-1"}),
        ("PatientName=doe^jane", {"PAT-1"}),
        ("PatientName=DOE%5EJANE", {"PAT-1"}),
        ("00100010=SMITH^JOHN^A", {"PAT-2"}),
        ("PatientName=smith^john^a^^", {"PAT-2"}),
        ("PatientName=DO*", {"PAT-1"}),
        ("PatientName=DO%2A", {"PAT-1"}),
        ("PatientName=*JOHN*", {"PAT-2"}),
        ("PatientName=D?E^JANE", {"PAT-1"}),
        ("PatientName=*", {"PAT-1", "PAT-2", "PAT-3", "PAT-4", "PAT-5"}),
        ("PatientName=buc^jérôme", {"PAT-3"}),
        ("PatientName=BUC%5EJ%C3%89R%C3%94ME", {"PAT-3"}),
        ("PatientName=Yamada^Tarou", {"PAT-4"}),
        ("PatientName=山田^太郎", {"PAT-4"}),
        ("PatientName=山田*", {"PAT-4"}),
        ("PatientName==山田^太郎", {"PAT-4"}),
        ("PatientName=jo&fuzzymatching=true", {"PAT-2"}),
        ("PatientName=jan&fuzzymatching=true", {"PAT-1"}),
        ("PatientName=sm^jo&fuzzymatching=true", {"PAT-2"}),
        ("PatientName=jan&fuzzymatching=false", set()),
        ("PatientID=PAT-2", {"PAT-2"}),
        ("PatientID=pat-2", set()),
        ("PatientID=PAT-*", {"PAT-1", "PAT-2", "PAT-3", "PAT-4", "PAT-5"}),
        ("AccessionNumber=ACC-1", {"PAT-1"}),
        ("AccessionNumber=ACC_3%25", {"PAT-3"}),
        ("AccessionNumber=ACC_*", {"PAT-3"}),
        ("AccessionNumber=ACC%25", set()),
        ("AccessionNumber=ACC__", set()),
        ("StudyDate=20240115", {"PAT-1"}),
        ("StudyDate=20230101-20231231", {"PAT-2"}),
        ("StudyDate=20230101-", {"PAT-1", "PAT-2"}),
        ("StudyDate=-20221231", {"PAT-3", "PAT-4"}),
        ("StudyDate=20231231-20230101", set()),
        ("StudyDate=20230610&StudyTime=1400-1500", {"PAT-2"}),
        ("StudyTime=1415-", {"PAT-2"}),
        ("StudyTime=-1415", {"PAT-1", "PAT-2", "PAT-3", "PAT-4", "PAT-5"}),
        ("StudyTime=-1414", {"PAT-1", "PAT-3", "PAT-4", "PAT-5"}),
        ("StudyTime=141501-", set()),
        ("ModalitiesInStudy=MR", {"PAT-2"}),
        ("ModalitiesInStudy=CT", {"PAT-1", "PAT-2", "PAT-4"}),
        ("ModalitiesInStudy=CR,MR", {"PAT-2", "PAT-3"}),
        ("ModalitiesInStudy=CR%2CMR", {"PAT-2", "PAT-3"}),
        ("ModalitiesInStudy=CR%5CMR", {"PAT-2", "PAT-3"}),
        ("ModalitiesInStudy=mr", {"PAT-2"}),
        ("ModalitiesInStudy=US", set()),
        ("ReferringPhysicianName=house^gregory", {"PAT-2"}),
        ("StudyDescription=MR*", {"PAT-2"}),
        ("StudyDescription=mr*", set()),
        ("PatientName=SMITH*&ModalitiesInStudy=CT", {"PAT-2"}),
        ("PatientName=DOE*&ModalitiesInStudy=MR", set()),
    ],
)
def test_it_matches_studies(archive: dict[str, Any], upload_client: Client, query: str, expected: set[str]) -> None:
    assert patient_ids(get(upload_client, "studies", query)) == expected


@pytest.mark.django_db
def test_it_matches_a_list_of_study_uids_separated_by_commas_or_backslashes(
    archive: dict[str, Any], upload_client: Client
) -> None:
    a, b = archive["jane"]["spec"].study_uid, archive["smith"]["spec"].study_uid
    for sep in (",", "%2C", "\\", "%5C"):
        assert patient_ids(get(upload_client, "studies", f"StudyInstanceUID={a}{sep}{b}")) == {"PAT-1", "PAT-2"}
    assert patient_ids(get(upload_client, "studies", f"0020000D={a}")) == {"PAT-1"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("series", "Modality=MR", 1),
        ("series", "Modality=CT", 3),
        ("series", "PatientID=PAT-2", 2),
        ("series", "PatientName=smith*&Modality=CT", 1),
        ("series", "SeriesDescription=SCOUT", 1),
        ("series", "StudyDate=20230610", 2),
        ("instances", "PatientID=PAT-2", 3),
        ("instances", "Modality=MR", 2),
        ("instances", "InstanceNumber=2", 2),
        ("instances", "SOPClassUID=1.2.840.10008.5.1.4.1.1.4", 2),
        ("instances", "AccessionNumber=ACC-1&InstanceNumber=3", 1),
    ],
)
def test_it_matches_series_and_instances_by_attributes_of_any_higher_level(
    archive: dict[str, Any], upload_client: Client, path: str, query: str, expected: int
) -> None:
    assert len(found(get(upload_client, path, query))) == expected


@pytest.mark.django_db
def test_it_lists_the_series_and_instances_of_a_study_and_of_a_series(
    archive: dict[str, Any], upload_client: Client
) -> None:
    study = archive["smith"]["spec"].study_uid
    series = found(get(upload_client, f"studies/{study}/series"))
    assert [values(s, "00080060") for s in series] == [["MR"], ["CT"]]
    assert [values(s, "00201209") for s in series] == [[2], [1]]
    mr = values(series[0], "0020000E")[0]
    instances = found(get(upload_client, f"studies/{study}/series/{mr}/instances"))
    assert [values(i, "00200013") for i in instances] == [[1], [2]]
    assert {values(i, "0020000E")[0] for i in instances} == {mr}
    assert len(found(get(upload_client, f"studies/{study}/instances"))) == 3
    assert len(found(get(upload_client, f"studies/{study}/instances", "Modality=CT"))) == 1


# ---------------------------------------------------------------- returned attributes


@pytest.mark.django_db
def test_it_returns_the_required_study_attributes(archive: dict[str, Any], upload_client: Client) -> None:
    spec = archive["smith"]["spec"]
    (study,) = found(get(upload_client, "studies", f"StudyInstanceUID={spec.study_uid}"))
    assert values(study, "00080061") == ["CT", "MR"]
    assert values(study, "00201206") == [2]
    assert values(study, "00201208") == [3]
    assert values(study, "00080056") == ["ONLINE"]
    assert values(study, "00080005") == ["ISO_IR 192"]
    assert values(study, "00100010") == [{"Alphabetic": "SMITH^JOHN^A"}]
    assert values(study, "00080020") == ["20230610"]
    assert values(study, "00080050") == ["ACC-2"]
    assert values(study, "00081190") == [f"http://testserver/dicom-web/studies/{spec.study_uid}"]
    assert study["00081190"]["vr"] == "UR"
    assert "00081030" not in study  # Study Description only when asked for


@pytest.mark.django_db
def test_it_returns_valueless_attributes_as_a_bare_vr(archive: dict[str, Any], upload_client: Client) -> None:
    (study,) = found(get(upload_client, "studies", "PatientID=PAT-5&IssuerOfPatientID="))
    assert study["00080061"] == {"vr": "CS", "Value": []}  # the one list OHIF reads unguarded
    assert study["00080020"] == {"vr": "DA"}
    assert study["00100021"] == {"vr": "LO"}
    for item in found(get(upload_client, "studies")) + found(get(upload_client, "instances")):
        for tag, attr in item.items():
            assert set(attr) <= {"vr", "Value", "BulkDataURI", "InlineBinary"}, tag
            if tag != "00080061":
                assert "Value" not in attr or attr["Value"] not in (None, []), tag
            else:
                assert isinstance(attr["Value"], list) and "" not in attr["Value"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "includefield",
    [
        "includefield=StudyDescription",
        "includefield=00081030",
        "includefield=PatientAge&includefield=00081030",
        "includefield=00101010,StudyDescription",
        "includefield=00101010%2CStudyDescription",
        "includefield=all",
    ],
)
def test_it_adds_the_attributes_named_by_includefield(
    archive: dict[str, Any], upload_client: Client, includefield: str
) -> None:
    (study,) = found(get(upload_client, "studies", f"PatientID=PAT-2&{includefield}"))
    assert values(study, "00081030") == ["MR BRAIN"]


@pytest.mark.django_db
def test_it_returns_every_stored_attribute_of_an_instance_for_includefield_all(
    archive: dict[str, Any], upload_client: Client
) -> None:
    study, series, sop = uids(archive["jane"]["parts"][0])
    path = f"studies/{study}/series/{series}/instances"
    (plain,) = found(get(upload_client, path, f"SOPInstanceUID={sop}"))
    (full,) = found(get(upload_client, path, f"SOPInstanceUID={sop}&includefield=all"))
    assert values(plain, "00280100") == [16] and values(plain, "00280010") == [64]
    assert values(plain, "00081190")[0].endswith(f"/instances/{sop}")
    assert "00280030" not in plain and values(full, "00280030") == [0.7, 0.7]
    assert full["7FE00010"]["BulkDataURI"].startswith("http://testserver/dicom-web/studies/")
    (one,) = found(get(upload_client, path, f"SOPInstanceUID={sop}&includefield=PixelSpacing"))
    assert values(one, "00280030") == [0.7, 0.7]


@pytest.mark.django_db
def test_it_includes_the_study_attributes_when_searching_all_series_and_instances(
    archive: dict[str, Any], upload_client: Client
) -> None:
    study = archive["smith"]["spec"].study_uid
    for path in ("series", "instances"):
        item = found(get(upload_client, path, "PatientID=PAT-2"))[0]
        assert values(item, "00100010") == [{"Alphabetic": "SMITH^JOHN^A"}]
        assert values(item, "0020000D") == [study]
    (scoped,) = found(get(upload_client, f"studies/{study}/series", "Modality=MR"))
    assert "00100010" not in scoped and values(scoped, "0020000D") == [study]
    instance = found(get(upload_client, f"studies/{study}/instances", "Modality=MR"))[0]
    assert values(instance, "00080060") == ["MR"]  # the series' attributes come along


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("latin", {"Alphabetic": "Buc^Jérôme"}),
        ("japanese", {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}),
    ],
)
def test_it_round_trips_names_in_other_character_sets(
    archive: dict[str, Any], upload_client: Client, who: str, expected: dict[str, str]
) -> None:
    pid = archive[who]["spec"].patient_id
    for path in ("studies", "series", "instances"):
        response = get(upload_client, path, f"PatientID={pid}")
        (item,) = found(response)
        assert values(item, "00100010") == [expected]
        assert expected["Alphabetic"].encode() in response.content  # UTF-8, not \u escapes


# ---------------------------------------------------------------- paging


@pytest.mark.django_db
def test_it_pages_with_limit_and_offset_newest_first(archive: dict[str, Any], upload_client: Client) -> None:
    everything = [values(s, "00100020")[0] for s in found(get(upload_client, "studies"))]
    assert everything[:4] == ["PAT-1", "PAT-2", "PAT-3", "PAT-4"]
    pages = [found(get(upload_client, "studies", f"limit=2&offset={o}")) for o in (0, 2, 4, 6)]
    assert [values(s, "00100020")[0] for page in pages for s in page] == everything
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert "Warning" not in get(upload_client, "studies", "limit=2")


@pytest.mark.django_db
def test_it_clamps_an_absurd_limit_and_warns_when_results_were_cut(
    archive: dict[str, Any], upload_client: Client, settings: Any
) -> None:
    settings.PACS_QIDO_MAX_LIMIT = 3
    response = get(upload_client, "studies", "limit=1000000")
    assert len(found(response)) == 3
    assert response["Warning"].startswith("299 http://testserver/dicom-web:")
    assert "maximum of 3" in response["Warning"]
    assert len(found(get(upload_client, "studies"))) == 3
    assert "Warning" not in get(upload_client, "studies", "limit=100000&PatientID=PAT-1")


@pytest.mark.django_db
def test_it_answers_no_match_with_an_empty_json_array(archive: dict[str, Any], upload_client: Client) -> None:
    response = get(upload_client, "studies", "PatientID=NOBODY")
    assert response.status_code == 200 and response.content == b"[]"
    assert response["Content-Type"] == JSON


# ---------------------------------------------------------------- bad input


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "query", "reason"),
    [
        ("studies", "limit=-1", "limit"),
        ("studies", "limit=0", "limit"),
        ("studies", "limit=ten", "limit"),
        ("studies", "limit=" + "9" * 5000, "limit"),
        ("studies", "offset=-5", "offset"),
        ("studies", "offset=99999999999999", "offset"),
        ("studies", "limit=1&limit=2", "limit"),
        ("studies", "fuzzymatching=maybe", "fuzzymatching"),
        ("studies", "StudyDate=2023-01-01", "StudyDate"),
        ("studies", "StudyDate=20230230", "StudyDate"),
        ("studies", "StudyDate=20230101-20230102-20230103", "StudyDate"),
        ("studies", "StudyDate=-", "StudyDate"),
        ("studies", "StudyDate='; DROP TABLE archive_study; --", "StudyDate"),
        ("studies", "StudyTime=2500", "StudyTime"),
        ("studies", "StudyInstanceUID=1.2.3.abc", "StudyInstanceUID"),
        ("studies", "StudyInstanceUID=1.2.3,1..2", "StudyInstanceUID"),
        ("studies", "StudyInstanceUID=1' OR '1'='1", "StudyInstanceUID"),
        ("studies", "PatientName=" + "A" * 10000, "PatientName"),
        ("studies", "PatientID=PAT%00-1", "PatientID"),
        ("studies", "PatientName=A=B=C=D", "person name"),
        ("studies", "PatientID=1&PatientID=2", "PatientID"),
        ("studies", "includefield=NoSuchKeyword", "includefield"),
        ("series", "SeriesNumber=one", "SeriesNumber"),
        ("instances", "InstanceNumber=1;DELETE", "InstanceNumber"),
        ("studies/1.2.3.x/series", "", "Study Instance UID"),
        ("studies/1.2/series/1.2.x/instances", "", "Series Instance UID"),
        ("studies", "ModalitiesInStudy=%5C", "ModalitiesInStudy"),
        ("series", "Modality=,", "Modality"),
    ],
)
def test_it_refuses_malformed_queries_with_a_precise_400(
    archive: dict[str, Any], upload_client: Client, path: str, query: str, reason: str
) -> None:
    response = get(upload_client, path, query)
    assert response.status_code == 400, response.content
    assert reason in json.loads(response.content)["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        "' OR 1=1 --",
        "%",
        "%25",
        "_",
        "\\A",
        "%5CA",
        '"',
        "'",
        "*%*",
        "*_*",
        "A%",
        "[A-Z]*",
        "(.*)",
        "DOE^JANE'); DROP TABLE archive_patient; --",
        "*\\*",
    ],
)
def test_it_treats_injection_attempts_as_literal_values(
    archive: dict[str, Any], upload_client: Client, value: str
) -> None:
    # Only the accession number "ACC_3%" really contains '%' and '_'; as LIKE
    # metacharacters they would have matched every study.
    everyone = {"PAT-1", "PAT-2", "PAT-3", "PAT-4", "PAT-5"}
    literal = {
        ("AccessionNumber", "*%*"): {"PAT-3"},
        ("AccessionNumber", "*_*"): {"PAT-3"},
        ("ModalitiesInStudy", "*\\*"): everyone,  # two values, each a universal wildcard
    }
    for key in ("PatientName", "PatientID", "AccessionNumber", "StudyDescription", "ModalitiesInStudy"):
        response = get(upload_client, "studies", f"{key}={quote(value, safe='%*')}")
        assert response.status_code in (200, 400), (key, value, response.status_code)
        if response.status_code == 200:
            assert patient_ids(response) == literal.get((key, value), set()), (key, value)
    assert Study.objects.count() == 5


@pytest.mark.django_db
def test_it_ignores_unsupported_keys_with_a_warning(archive: dict[str, Any], upload_client: Client) -> None:
    response = get(upload_client, "studies", "PatientID=PAT-1&Foo=bar&SOPClassUID=1.2&PatientWeight=70")
    assert patient_ids(response) == {"PAT-1"}
    assert response["Warning"].startswith("299 ")
    for name in ("Foo", "SOPClassUID", "PatientWeight"):
        assert name in response["Warning"]
    bad_name = get(upload_client, "studies", "PatientID=PAT-1&a%0D%0AX-Evil=1")
    assert patient_ids(bad_name) == {"PAT-1"} and "\n" not in bad_name["Warning"]
    assert "X-Evil" not in bad_name


# ---------------------------------------------------------------- protocol


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept", "status", "ctype"),
    [
        ("application/dicom+json", 200, "application/dicom+json"),
        ("application/json", 200, "application/json"),
        ("*/*", 200, "application/dicom+json"),
        ("application/*;q=0.5, text/html", 200, "application/dicom+json"),
        ("", 200, "application/dicom+json"),
        ('multipart/related; type="application/dicom+xml"', 406, None),
        ("application/dicom+xml", 406, None),
        ("text/html", 406, None),
        ("application/dicom+json;q=0", 406, None),
    ],
)
def test_it_negotiates_the_response_type(
    archive: dict[str, Any], upload_client: Client, accept: str, status: int, ctype: str | None
) -> None:
    response = upload_client.get("/dicom-web/studies", HTTP_ACCEPT=accept)
    assert response.status_code == status
    if ctype:
        assert response["Content-Type"] == ctype and len(json.loads(response.content)) == 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["", "series", "instances", "studies/1.2.3/series", "studies/1.2/series/1.3/instances"]
)
@pytest.mark.parametrize("method", ["put", "patch", "delete", "post"])
def test_it_refuses_other_methods_with_405_and_allow(upload_client: Client, path: str, method: str) -> None:
    response = getattr(upload_client, method)(f"/dicom-web/{path}")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_it_answers_head_without_a_body(archive: dict[str, Any], upload_client: Client) -> None:
    response = upload_client.head("/dicom-web/studies", HTTP_ACCEPT=JSON)
    assert response.status_code == 200 and response.content == b""


@pytest.mark.django_db
def test_the_root_answers_signed_in_users_only(upload_client: Client, client: Client) -> None:
    response = upload_client.get("/dicom-web/")
    assert response.status_code == 200
    assert json.loads(response.content)["studies"] == "http://testserver/dicom-web/studies"
    assert client.get("/dicom-web/").status_code == 401


# ---------------------------------------------------------------- access and audit


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["studies", "series", "instances"])
def test_it_requires_authentication(client: Client, path: str) -> None:
    assert client.get(f"/dicom-web/{path}").status_code == 401


@pytest.mark.django_db
def test_an_outsider_finds_nothing_of_another_site(
    archive: dict[str, Any], outsider_client: Client, upload_client: Client
) -> None:
    study = archive["jane"]["spec"].study_uid
    for path in ("studies", "series", "instances", f"studies/{study}/series", f"studies/{study}/instances"):
        assert found(get(outsider_client, path)) == []
    assert len(found(get(upload_client, f"studies/{study}/instances"))) == 3


@pytest.mark.django_db
def test_a_referring_clinician_may_not_search_the_archive_but_may_open_a_study(
    archive: dict[str, Any], general_site: Any
) -> None:
    from portal.accounts.roles import Role
    from portal.models import AccessGrant

    clinician = role_user("clinician", Role.REFERRING_CLINICIAN, general_site)
    client = bearer_client(clinician)
    study = Study.objects.get(study_instance_uid=archive["jane"]["spec"].study_uid)
    AccessGrant.objects.create(user=clinician, study=study, expires_at=timezone.now() + timedelta(hours=1))
    for path in ("studies", "series", "instances"):
        assert get(client, path).status_code == 403
    assert len(found(get(client, f"studies/{study.study_instance_uid}/series"))) == 1
    other = archive["smith"]["spec"].study_uid
    assert found(get(client, f"studies/{other}/series")) == []
    assert AuditEvent.objects.filter(action="search", outcome="denied", actor="clinician").count() == 3


@pytest.mark.django_db
def test_it_records_one_audit_event_per_search(archive: dict[str, Any], upload_client: Client) -> None:
    before = AuditEvent.objects.filter(action="search").count()
    found(get(upload_client, "series", "PatientID=PAT-2&Modality=MR"))
    events = AuditEvent.objects.filter(action="search").order_by("id")
    assert events.count() == before + 1
    detail = events.last().detail  # type: ignore[union-attr]
    assert detail == {"level": "series", "query": {"PatientID": "PAT-2", "Modality": "MR"}}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("studies", ""),
        ("studies", "includefield=all&ModalitiesInStudy=CT"),
        ("series", "PatientName=*"),
        ("instances", "includefield=all"),
    ],
)
def test_it_costs_the_same_number_of_queries_for_one_or_many_results(
    upload_client: Client, django_assert_max_num_queries: Any, path: str, query: str
) -> None:
    def count() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            assert found(get(upload_client, path, query))
        return len(ctx.captured_queries)

    stow(upload_client, make_series(StudySpec(), "CT", count=1))
    few = count()
    for _ in range(6):
        stow(upload_client, make_series(StudySpec(), "CT", count=3))
    Instance.objects.filter(pk=Instance.objects.order_by("pk").last().pk).update(availability="NEARLINE")  # type: ignore[union-attr]
    with django_assert_max_num_queries(few):
        assert len(found(get(upload_client, path, query))) > 1


@pytest.mark.parametrize(
    ("value", "level"),
    [("PATIENT", Level.PATIENT), ("STUDY", Level.STUDY), ("SERIES", Level.SERIES), ("IMAGE", Level.INSTANCE)],
)
def test_a_query_retrieve_level_names_the_level_that_c_find_shares(value: str, level: Level) -> None:
    assert Level.from_query_retrieve_level(value) is level
    assert level.query_retrieve_level == value


@pytest.mark.parametrize("value", ["INSTANCE", "study", "", "FRAME"])
def test_any_other_query_retrieve_level_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a Query/Retrieve Level"):
        Level.from_query_retrieve_level(value)


def test_levels_run_from_the_patient_down_so_a_key_matches_at_its_level_and_below() -> None:
    assert list(Level) == sorted(Level) == [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_studies_refuses_other_methods_naming_search_and_store_in_allow(upload_client: Client, method: str) -> None:
    response = getattr(upload_client, method)("/dicom-web/studies")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, POST"


@pytest.mark.django_db
def test_a_wrong_method_on_a_search_is_a_405_even_with_a_malformed_uid(upload_client: Client) -> None:
    response = upload_client.put("/dicom-web/studies/not-a-uid/series")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"

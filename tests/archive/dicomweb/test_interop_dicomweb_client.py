"""Interoperability: the dicomweb-client library against a live server.

A standard DICOMweb client must just work: dicomweb-client (PyPI) stores a
study with STOW-RS, finds it with QIDO-RS, and reads it back with WADO-RS
(instances, frames, metadata) over real HTTP, getting the same data set and
the same pixel bytes it sent.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from django.contrib.auth.models import User
from pydicom.dataset import Dataset

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import ApiToken, Instance

pytestmark = pytest.mark.django_db(transaction=True)


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def client(live_server: Any, uploader: User) -> DICOMwebClient:
    _, raw = ApiToken.issue(uploader, "dicomweb-client")
    return DICOMwebClient(url=f"{live_server.url}/dicom-web", headers={"Authorization": f"Bearer {raw}"})


@pytest.fixture
def study(client: DICOMwebClient) -> dict[str, Any]:
    """A CT series and an ultrasound clip of one non-ASCII patient, stored by the client."""
    spec = StudySpec(patient_name="MÜLLER^JÜRGEN", patient_id="INTEROP-1", accession="IOP1")
    raws = make_series(spec, "CT", count=3, size=64) + [make_instance(spec, "US", frames=4, size=64)]
    datasets = [pydicom.dcmread(io.BytesIO(raw)) for raw in raws]
    response = client.store_instances(datasets)
    stored = [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence]
    assert sorted(stored) == sorted(ds.SOPInstanceUID for ds in datasets)
    assert "FailedSOPSequence" not in response
    return {"spec": spec, "datasets": {ds.SOPInstanceUID: ds for ds in datasets}}


def test_it_finds_the_stored_study_series_and_instances_with_qido(client: DICOMwebClient, study: dict) -> None:
    spec = study["spec"]
    found = client.search_for_studies(search_filters={"PatientID": "INTEROP-1"})
    assert len(found) == 1
    match = Dataset.from_json(found[0])
    assert match.StudyInstanceUID == spec.study_uid
    assert str(match.PatientName) == "MÜLLER^JÜRGEN"
    series = client.search_for_series(spec.study_uid)
    assert sorted(Dataset.from_json(s).Modality for s in series) == ["CT", "US"]
    instances = client.search_for_instances(spec.study_uid)
    assert sorted(Dataset.from_json(i).SOPInstanceUID for i in instances) == sorted(study["datasets"])


def test_it_retrieves_every_instance_with_identical_bytes(client: DICOMwebClient, study: dict) -> None:
    retrieved = client.retrieve_study(study["spec"].study_uid, media_types=(("application/dicom", "*"),))
    assert len(retrieved) == len(study["datasets"])
    for ds in retrieved:
        original = study["datasets"][ds.SOPInstanceUID]
        assert encode(ds) == encode(original)
        stored = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
        assert ds.file_meta.TransferSyntaxUID == stored.transfer_syntax_uid


def test_it_retrieves_frames_of_a_multiframe_clip_byte_for_byte(client: DICOMwebClient, study: dict) -> None:
    clip = next(ds for ds in study["datasets"].values() if ds.Modality == "US")
    frames = client.retrieve_instance_frames(
        study["spec"].study_uid,
        clip.SeriesInstanceUID,
        clip.SOPInstanceUID,
        frame_numbers=[2, 4],
        media_types=(("application/octet-stream", "*"),),
    )
    size = clip.Rows * clip.Columns
    assert frames == [clip.PixelData[size : 2 * size], clip.PixelData[3 * size : 4 * size]]


def test_its_metadata_points_bulk_data_at_this_server(client: DICOMwebClient, study: dict) -> None:
    ct = next(ds for ds in study["datasets"].values() if ds.Modality == "CT")
    metadata = client.retrieve_series_metadata(study["spec"].study_uid, ct.SeriesInstanceUID)
    assert len(metadata) == 3
    for item in metadata:
        uri = urlsplit(item["7FE00010"]["BulkDataURI"])
        # dicomweb-client sends "Host: localhost" without the port; the server echoes the Host it was given.
        assert (uri.scheme, uri.hostname) == ("http", "localhost")
        assert uri.path.startswith(f"/dicom-web/studies/{study['spec'].study_uid}/series/{ct.SeriesInstanceUID}/")
        assert uri.path.endswith("/bulkdata/7FE00010")
        assert Dataset.from_json(item, bulk_data_uri_handler=lambda *a: b"").PatientID == "INTEROP-1"

"""The frame fast path (archive/dicomweb/fastpath.py) and the compiled access policy behind it.

Every answer the fast path gives must be the one the full view gives (same
bytes, same headers, same audit), and every request it cannot answer must
reach the full view unchanged. The WSGI application is called directly, as
gunicorn calls it; a recorder in front of Django tells who answered.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import pydicom
import pytest
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test import RequestFactory
from django.utils import timezone

from archive.access import policy, visibility, visible_studies
from archive.dicom.synthetic import StudySpec, make_series
from archive.dicomweb.fastpath import BearerHandler, FastPath
from archive.dicomweb.rows import PATIENT_ID, instance_rows, instances
from archive.models import ApiToken, Study
from audit.models import AuditEvent
from portal.access import SitePolicy
from portal.accounts.roles import Role
from portal.models import AccessGrant, UserProfile
from tests.conftest import bearer_client, multipart, role_user, stow
from tests.pacs.test_url_walk import all_paths, is_dicomweb

OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


class Recorder:
    """Django's WSGI application, counting the requests that reach it."""

    def __init__(self) -> None:
        self.django = WSGIHandler()
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.calls += 1
        return self.django(environ, start_response)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, by_django: bool) -> None:
        self.status, self.headers, self.body, self.by_django = status, headers, body, by_django


def call(
    path: str,
    *,
    token: str | None,
    accept: str = OCTETS,
    method: str = "GET",
    lean: bool = False,
    data: bytes = b"",
    content_type: str = "application/octet-stream",
    **extra: str,
) -> Answer:
    """One request through FastPath(Django[, BearerHandler]), as a WSGI server makes it.

    ``by_django`` tells whether the full Django application answered.
    """
    inner = Recorder()
    app = FastPath(inner, BearerHandler() if lean else None)
    headers: dict[str, Any] = {"HTTP_ACCEPT": accept, **extra}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    environ = RequestFactory().generic(method, path, data, content_type, **headers).environ
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(response_headers)

    # As Django's test client does: the test's database connection must survive the request signals.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return Answer(seen["status"], seen["headers"], body, inner.calls == 1)


def token_for(user: User, **kw: Any) -> str:
    return ApiToken.issue(user, "fast path test", **kw)[1]


def frame_url(study: dict[str, Any], frame: int = 1) -> str:
    return f"/dicom-web/studies/{study['study']}/series/{study['series']}/instances/{study['instance']}/frames/{frame}"


@pytest.fixture
def owner_token(owner: User) -> str:
    return token_for(owner)


def test_it_answers_a_stored_frame_itself_exactly_as_the_full_view_does(
    site_a_study: dict[str, Any], owner_token: str, settings: Any
) -> None:
    fast = call(frame_url(site_a_study), token=owner_token)
    settings.PACS_FAST_PATH = False
    full = call(frame_url(site_a_study), token=owner_token)
    assert (fast.status, fast.by_django, full.by_django) == (200, False, True)
    assert fast.body == full.body
    for name in ("Content-Type", "Content-Length", "ETag", "Cache-Control", "Content-Security-Policy"):
        assert fast.headers[name] == full.headers[name], name
    assert fast.headers["X-Content-Type-Options"] == "nosniff"
    assert fast.headers["X-Frame-Options"] == "DENY"
    assert int(fast.headers["Content-Length"]) == len(fast.body)
    assert "Authorization" in fast.headers["Vary"] and "Authorization" in full.headers["Vary"]


def test_the_fast_frame_is_the_stored_pixel_data(site_a_study: dict[str, Any], owner_token: str) -> None:
    import io

    import pydicom

    answer = call(frame_url(site_a_study), token=owner_token, accept="application/octet-stream")
    assert (answer.status, answer.by_django) == (200, False)
    assert answer.body == pydicom.dcmread(io.BytesIO(site_a_study["parts"][0])).PixelData


def test_it_records_the_frame_read_in_the_audit_trail(site_a_study: dict[str, Any], owner_token: str) -> None:
    before = AuditEvent.objects.filter(action="view_frames").count()
    assert call(frame_url(site_a_study), token=owner_token).status == 200
    event = AuditEvent.objects.filter(action="view_frames").latest("id")
    assert AuditEvent.objects.filter(action="view_frames").count() == before + 1
    assert (event.actor, event.study_instance_uid, event.patient_id) == ("owner", site_a_study["study"], "PAT-A1")
    assert event.source_ip == "127.0.0.1"


def test_it_answers_304_to_a_matching_if_none_match(site_a_study: dict[str, Any], owner_token: str) -> None:
    first = call(frame_url(site_a_study), token=owner_token)
    again = call(frame_url(site_a_study), token=owner_token, HTTP_IF_NONE_MATCH=first.headers["ETag"])
    assert (again.status, again.body, again.by_django) == (304, b"", False)


@pytest.mark.parametrize(
    ("token", "status"),
    [("pacs_not-a-real-token", 401), (None, 401)],
    ids=["unknown token", "no credentials"],
)
def test_it_leaves_refusals_of_credentials_to_the_full_view(
    site_a_study: dict[str, Any], token: str | None, status: int
) -> None:
    answer = call(frame_url(site_a_study), token=token)
    assert (answer.status, answer.by_django) == (status, True)
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_or_revoked_token_reads_nothing(site_a_study: dict[str, Any], owner: User) -> None:
    expired = token_for(owner, expires_at=timezone.now() - timedelta(seconds=1))
    revoked = token_for(owner)
    ApiToken.objects.filter(user=owner).exclude(expires_at__isnull=False).update(revoked=True)
    for token in (expired, revoked):
        answer = call(frame_url(site_a_study), token=token)
        assert (answer.status, answer.by_django) == (401, True)
        assert b"\x00" not in answer.body


def test_an_outsider_gets_the_full_views_404_for_another_sites_frame(
    site_a_study: dict[str, Any], outsider: User
) -> None:
    answer = call(frame_url(site_a_study), token=token_for(outsider))
    assert (answer.status, answer.by_django) == (404, True)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (lambda s: {**s, "instance": s["instance"] + "9"}, 404),
        (lambda s: {**s, "series": s["series"] + ".1"}, 404),
        (lambda s: {**s, "study": "1..2"}, 400),
    ],
    ids=["unknown instance", "instance under another series", "malformed UID"],
)
def test_wrong_addresses_are_answered_by_the_full_view(
    site_a_study: dict[str, Any], owner_token: str, change: Callable[[dict[str, Any]], dict[str, Any]], status: int
) -> None:
    answer = call(frame_url(change(site_a_study)), token=owner_token)
    assert (answer.status, answer.by_django) == (status, True)


def test_a_frame_beyond_the_last_gets_the_full_views_404(site_a_study: dict[str, Any], owner_token: str) -> None:
    answer = call(frame_url(site_a_study, frame=2), token=owner_token)
    assert (answer.status, answer.by_django) == (404, True)
    assert b"does not exist" in answer.body


def test_head_and_unacceptable_types_go_to_the_full_view(site_a_study: dict[str, Any], owner_token: str) -> None:
    head = call(frame_url(site_a_study), token=owner_token, method="HEAD")
    assert (head.status, head.body, head.by_django) == (200, b"", True)
    refused = call(frame_url(site_a_study), token=owner_token, accept="image/png")
    assert (refused.status, refused.by_django) == (406, True)


def test_a_host_outside_allowed_hosts_gets_the_full_views_400(site_a_study: dict[str, Any], owner_token: str) -> None:
    answer = call(frame_url(site_a_study), token=owner_token, HTTP_HOST="evil.example")
    assert (answer.status, answer.by_django) == (400, True)


def test_an_inactive_users_token_and_an_auditors_token_read_no_frame(
    site_a_study: dict[str, Any], colleague: User, general_site: Any
) -> None:
    token = token_for(colleague)
    User.objects.filter(pk=colleague.pk).update(is_active=False)
    assert call(frame_url(site_a_study), token=token).status == 401
    auditor = role_user("auditor", Role.AUDITOR, general_site)
    answer = call(frame_url(site_a_study), token=token_for(auditor))
    assert (answer.status, answer.by_django) == (404, True)


class NarrowedPolicy(SitePolicy):
    """A hospital's policy that narrows only studies(): it must govern frames too."""

    def studies(self, user: Any) -> Any:
        return Study.objects.none()


class QuerysetOnlyPolicy(SitePolicy):
    """A policy that states its rule as a queryset only (no Visibility): frames still work."""

    def studies(self, user: Any) -> Any:
        return super().studies(user).filter(site__isnull=False)


@pytest.mark.parametrize(
    ("name", "status", "by_django"),
    [("NarrowedPolicy", 404, True), ("QuerysetOnlyPolicy", 200, False)],
)
def test_a_policy_that_overrides_its_queryset_governs_frames(
    site_a_study: dict[str, Any], owner_token: str, settings: Any, name: str, status: int, by_django: bool
) -> None:
    settings.PACS_ACCESS_POLICY = f"{__name__}.{name}"
    policy.cache_clear()
    try:
        assert visibility(User.objects.get(username="owner")) is None
        answer = call(frame_url(site_a_study), token=owner_token)
    finally:
        policy.cache_clear()
    assert (answer.status, answer.by_django) == (status, by_django)


def test_it_can_be_switched_off(site_a_study: dict[str, Any], owner_token: str, settings: Any) -> None:
    settings.PACS_FAST_PATH = False
    answer = call(frame_url(site_a_study), token=owner_token)
    assert (answer.status, answer.by_django) == (200, True)


def test_a_referring_clinicians_grant_opens_the_frame_and_its_expiry_closes_it(
    site_a_study: dict[str, Any], general_site: Any
) -> None:
    clinician = role_user("dr-fast", Role.REFERRING_CLINICIAN)
    token = token_for(clinician)
    assert call(frame_url(site_a_study), token=token).status == 404
    given = AccessGrant.objects.create(
        user=clinician,
        study=Study.objects.get(study_instance_uid=site_a_study["study"]),
        reason="EHR launch",
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    opened = call(frame_url(site_a_study), token=token)
    assert (opened.status, opened.by_django) == (200, False)
    AccessGrant.objects.filter(pk=given.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert call(frame_url(site_a_study), token=token).status == 404


# --- Other bearer DICOMweb requests: Django with the middleware that applies to them ---------------------


def media(answer: Answer) -> str:
    """The Content-Type without its multipart boundary (a fresh one per response)."""
    return answer.headers.get("Content-Type", "").split("; boundary=")[0]


def test_every_dicomweb_url_answers_a_bearer_client_alike_through_the_lean_handler(
    site_a_study: dict[str, Any], owner_token: str
) -> None:
    walked = 0
    for _, path in all_paths(site_a_study):
        if not is_dicomweb(path) or "/frames/" in path:
            continue
        for method in ("GET", "HEAD"):
            lean = call(path, token=owner_token, accept="*/*", method=method, lean=True)
            full = call(path, token=owner_token, accept="*/*", method=method)
            assert not lean.by_django and full.by_django
            assert lean.status == full.status, (method, path)
            assert lean.status < 500, (method, path)
            assert media(lean) == media(full), (method, path)
            assert lean.headers["X-Content-Type-Options"] == "nosniff"
            walked += 1
    assert walked >= 40


def test_the_lean_handler_stores_searches_and_compresses_like_the_full_one(owner_token: str, general_site: Any) -> None:
    spec = StudySpec(patient_name="LEAN^LUKE", patient_id="PAT-L1")
    body, ctype = multipart(make_series(spec, "CT", count=2))
    stored = call(
        "/dicom-web/studies",
        token=owner_token,
        accept="application/dicom+json",
        method="POST",
        lean=True,
        data=body,
        content_type=ctype,
    )
    assert (stored.status, stored.by_django) == (200, False)
    found = call(
        "/dicom-web/studies?PatientName=LEAN*",
        token=owner_token,
        accept="application/dicom+json",
        lean=True,
        HTTP_ACCEPT_ENCODING="gzip",
    )
    assert (found.status, found.headers["Content-Encoding"]) == (200, "gzip")
    import gzip
    import json

    assert [r["00100020"]["Value"] for r in json.loads(gzip.decompress(found.body))] == [["PAT-L1"]]


def test_a_session_cookie_never_stands_in_for_a_bad_bearer_token(
    site_a_study: dict[str, Any], owner: User, client: Any
) -> None:
    client.force_login(owner)
    cookie = client.cookies["sessionid"].value
    answer = call(
        f"/dicom-web/studies/{site_a_study['study']}/metadata",
        token="pacs_wrong",
        accept="application/dicom+json",
        lean=True,
        HTTP_COOKIE=f"sessionid={cookie}",
    )
    assert (answer.status, answer.by_django) == (401, False)


# --- One policy: the compiled form selects exactly what the queryset selects ---------------------------


def selected_by_sql(user: User) -> set[str]:
    seen = visibility(User.objects.get(pk=user.pk))
    assert seen is not None
    where, params = seen.where("st", connection.ops.quote_name)
    table = connection.ops.quote_name(Study._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT st.study_instance_uid FROM {table} st WHERE {where}", params)  # noqa: S608
        return {row[0] for row in cursor.fetchall()}


def selected_by_queryset(user: User) -> set[str]:
    return set(visible_studies(User.objects.get(pk=user.pk)).values_list("study_instance_uid", flat=True))


def test_the_compiled_policy_and_the_queryset_select_the_same_studies(
    site_a_study: dict[str, Any], outsider: User, colleague: User, admin_user: User, general_site: Any
) -> None:
    spec = StudySpec(patient_name="ELSEWHERE^BOB", patient_id="PAT-B1", institution="St Elsewhere")
    assert stow(bearer_client(outsider), make_series(spec, "MR", count=1)).status_code == 200
    named = StudySpec(
        patient_name="NAMED^NORA", patient_id="PAT-N2", referring="Named^Referrer", institution="Unknown Clinic"
    )
    assert stow(bearer_client(admin_user), make_series(named, "CR", count=1)).status_code == 200
    clinician = role_user("dr-alice", Role.REFERRING_CLINICIAN, general_site)
    UserProfile.objects.create(user=clinician, dicom_person_name="Named^Referrer")
    granted = role_user("consultant", Role.RADIOLOGIST)
    AccessGrant.objects.create(
        user=granted, site=general_site, reason="cover", expires_at=timezone.now() + timedelta(hours=1)
    )
    auditor = role_user("auditor", Role.AUDITOR, general_site)
    inactive = role_user("gone", Role.RADIOLOGIST, general_site)
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    expectations = {
        admin_user: 3,
        colleague: 1,
        outsider: 1,
        clinician: 1,
        granted: 1,
        auditor: 0,
        inactive: 0,
    }
    for user, count in expectations.items():
        assert selected_by_sql(user) == selected_by_queryset(user), user.username
        assert len(selected_by_sql(user)) == count, user.username


def test_the_prepared_instance_lookup_returns_the_querysets_rows_in_its_order(
    site_a_study: dict[str, Any], owner: User, outsider: User, admin_user: User, general_site: Any
) -> None:
    spec = site_a_study["spec"]
    # A third series numbered before the others, so series order is not storage order.
    early = make_series(spec, "CT", count=2)
    for part in early:
        ds = pydicom.dcmread(io.BytesIO(part))
        ds.SeriesNumber = 0
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert stow(bearer_client(owner), [buffer.getvalue()]).status_code == 200
    fields = ("storage_key", "sha256", "size", "instance_number", "metadata", PATIENT_ID)
    request = RequestFactory().get("/")
    study, series, instance = site_a_study["study"], site_a_study["series"], site_a_study["instance"]
    shapes = [(study, None, None), (study, series, None), (study, series, instance), (study, None, instance)]
    for user in (owner, outsider, admin_user):
        request.user = User.objects.get(pk=user.pk)
        assert visibility(request.user) is not None
        for shape in shapes:
            expected = list(instances(request, *shape).values_list(*fields))
            assert instance_rows(request, *shape, fields) == expected, (user.username, shape)
    request.user = owner
    assert len(instance_rows(request, study, None, None, ("sha256",))) == 5
    assert instance_rows(request, study, None, None, ("instance_number",))[0] is not None
    assert instance_rows(request, "1.2.3", None, None, ("sha256",)) == []
    with pytest.raises(ValueError, match="not a plain column"):
        instance_rows(request, study, None, None, ("frames",))

"""MFA enforcement, enrolment, challenge, backup codes, throttling and the SSO glue (no browser)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from archive.dicom.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.mfa import factors as mfa
from portal.sso import oidc
from tests.conftest import stow
from tests.mfa_support import PASSWORD, code_from_hex_key, force_verified_login, user_with_role


@pytest.fixture
def radiologist(db: Any) -> User:
    return user_with_role("rad", Role.RADIOLOGIST.value)


@pytest.fixture
def technologist(db: Any) -> User:
    return user_with_role("tech", Role.TECHNOLOGIST.value)


def signed_in(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def enrolled(user: User) -> TOTPDevice:
    device = TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    mfa.issue_backup_codes(user)
    return device


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


@pytest.mark.parametrize("path", ["/", "/admin/", "/mfa/", "/mfa/backup-codes/"])
def test_it_sends_a_radiologist_without_an_authenticator_to_enrolment(radiologist: User, path: str) -> None:
    response = signed_in(radiologist).get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/mfa/enrol/?next=")


def test_it_sends_an_enrolled_radiologist_to_the_challenge_with_the_page_to_return_to(radiologist: User) -> None:
    enrolled(radiologist)
    response = signed_in(radiologist).get("/admin/auth/user/?q=rad")
    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert location.path == "/mfa/verify/"
    assert parse_qs(location.query)["next"] == ["/admin/auth/user/?q=rad"]


def test_it_treats_a_superuser_as_requiring_mfa(db: Any) -> None:
    User.objects.create_superuser("root", "root@example.org", PASSWORD)
    client = Client()
    client.login(username="root", password=PASSWORD)
    assert client.get("/admin/")["Location"].startswith("/mfa/enrol/")


def test_it_lets_a_verified_superuser_into_the_admin(admin_user: User) -> None:
    client = Client()
    force_verified_login(client, admin_user)
    assert client.get("/admin/").status_code == 200


def test_it_answers_session_dicomweb_with_403_json_until_the_second_factor(radiologist: User) -> None:
    response = signed_in(radiologist).get("/dicom-web/studies", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 403
    assert response.json() == {"detail": "A second authentication factor is required."}


def test_it_leaves_bearer_token_requests_alone(admin_client_token: Client) -> None:
    parts = make_series(StudySpec(patient_id="PAT-MFA"), "CT", count=1)
    response = stow(admin_client_token, parts)
    assert response.status_code == 200


def test_it_lets_a_role_without_mfa_browse_without_a_second_factor(technologist: User) -> None:
    response = signed_in(technologist).get("/?home")
    assert response.status_code == 200
    assert b"Welcome, tech" in response.content


def test_it_challenges_a_user_who_enrolled_voluntarily(technologist: User) -> None:
    enrolled(technologist)
    assert signed_in(technologist).get("/")["Location"].startswith("/mfa/verify/")


def test_it_keeps_sign_out_reachable_while_the_factor_is_owed(radiologist: User) -> None:
    client = signed_in(radiologist)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_it_shows_a_qr_code_and_the_secret_on_the_enrolment_page(radiologist: User) -> None:
    response = signed_in(radiologist).get("/mfa/enrol/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'src="data:image/svg+xml;base64,' in html
    device = TOTPDevice.objects.get(user=radiologist, confirmed=False)
    assert mfa.secret_base32(device) in html
    assert "style=" not in html and "<script" not in html


def test_it_keeps_the_same_secret_when_the_enrolment_page_is_reloaded(radiologist: User) -> None:
    client = signed_in(radiologist)
    client.get("/mfa/enrol/")
    client.get("/mfa/enrol/")
    assert TOTPDevice.objects.filter(user=radiologist).count() == 1


def test_it_confirms_the_authenticator_with_its_first_code_and_shows_ten_backup_codes_once(radiologist: User) -> None:
    client = signed_in(radiologist)
    client.get("/mfa/enrol/?next=/viewer/")
    device = TOTPDevice.objects.get(user=radiologist)

    response = client.post("/mfa/enrol/", {"code": code_from_hex_key(device.key), "next": "/viewer/"})

    assert response.status_code == 302
    assert response["Location"] == "/mfa/backup-codes/?next=%2Fviewer%2F"
    device.refresh_from_db()
    assert device.confirmed
    page = client.get(response["Location"])
    codes = re.findall(r"<li>([a-z2-7]{8})</li>", page.content.decode())
    assert len(codes) == 10
    assert set(codes) == set(StaticToken.objects.filter(device__user=radiologist).values_list("token", flat=True))
    assert client.get("/mfa/backup-codes/")["Location"] == "/mfa/"
    assert client.get("/").status_code == 200
    assert "mfa_enrol" in actions()


@pytest.mark.parametrize(("code", "status"), [("000000", 400), ("", 400), ("1" * 33, 400)])
def test_it_refuses_a_bad_enrolment_code(radiologist: User, code: str, status: int) -> None:
    client = signed_in(radiologist)
    client.get("/mfa/enrol/")
    response = client.post("/mfa/enrol/", {"code": code})
    assert response.status_code == status
    assert not TOTPDevice.objects.get(user=radiologist).confirmed
    assert client.get("/")["Location"].startswith("/mfa/enrol/")


def test_it_verifies_the_session_with_a_current_code_and_returns_to_next(radiologist: User) -> None:
    device = enrolled(radiologist)
    client = signed_in(radiologist)
    response = client.post("/mfa/verify/", {"code": code_from_hex_key(device.key), "next": "/mfa/"})
    assert response.status_code == 302
    assert response["Location"] == "/mfa/"
    assert client.get("/").status_code == 200
    event = AuditEvent.objects.get(action="mfa_verify")
    assert event.actor == "rad" and event.detail == {"method": "totp"}


def test_it_refuses_a_wrong_code_and_audits_the_failure(radiologist: User) -> None:
    enrolled(radiologist)
    client = signed_in(radiologist)
    response = client.post("/mfa/verify/", {"code": "123456"})
    assert response.status_code == 400
    assert b"not valid" in response.content
    assert client.get("/").status_code == 302
    failure = AuditEvent.objects.get(action="mfa_failed")
    assert failure.outcome == "failure" and failure.detail["reason"] == "invalid code"


def test_it_does_not_accept_the_same_code_twice(radiologist: User) -> None:
    device = enrolled(radiologist)
    code = code_from_hex_key(device.key)
    assert signed_in(radiologist).post("/mfa/verify/", {"code": code}).status_code == 302
    assert signed_in(radiologist).post("/mfa/verify/", {"code": code}).status_code in {400, 429}


def test_it_throttles_guessing_so_even_the_right_code_waits_after_a_wrong_one(radiologist: User) -> None:
    device = enrolled(radiologist)
    client = signed_in(radiologist)
    assert client.post("/mfa/verify/", {"code": "000000"}).status_code == 400
    response = client.post("/mfa/verify/", {"code": code_from_hex_key(device.key)})
    assert response.status_code == 429
    assert b"Too many wrong codes" in response.content
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    assert AuditEvent.objects.filter(action="mfa_failed", detail__reason="throttled").exists()


def test_it_accepts_each_backup_code_once(radiologist: User) -> None:
    enrolled(radiologist)
    code = StaticToken.objects.filter(device__user=radiologist).first()
    assert code is not None
    first = signed_in(radiologist)
    assert first.post("/mfa/verify/", {"code": code.token.upper()}).status_code == 302
    assert first.get("/").status_code == 200
    assert signed_in(radiologist).post("/mfa/verify/", {"code": code.token}).status_code == 400
    used = AuditEvent.objects.get(action="mfa_backup_code_used")
    assert used.detail == {"backup_codes_left": 9}


def test_it_replaces_backup_codes_from_a_verified_session(radiologist: User) -> None:
    device = enrolled(radiologist)
    old = set(StaticToken.objects.values_list("token", flat=True))
    client = signed_in(radiologist)
    client.post("/mfa/verify/", {"code": code_from_hex_key(device.key)})
    response = client.post("/mfa/backup-codes/renew/")
    assert response.status_code == 302
    new = set(StaticToken.objects.values_list("token", flat=True))
    assert len(new) == 10 and not (old & new)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_it_never_redirects_off_site_after_the_challenge(radiologist: User, target: str) -> None:
    device = enrolled(radiologist)
    response = signed_in(radiologist).post("/mfa/verify/", {"code": code_from_hex_key(device.key), "next": target})
    assert response["Location"] == "/"


@pytest.mark.parametrize(
    ("amr", "accepted"),
    [(["pwd"], False), (None, False), ([], False), (["pwd", "otp"], True), (["mfa"], True), (["HWK"], True)],
)
def test_it_accepts_the_providers_amr_as_second_factor_only_when_it_says_multi_factor(
    radiologist: User, rf: Any, amr: list[str] | None, accepted: bool
) -> None:
    client = signed_in(radiologist)
    request = rf.get("/")
    request.user = radiologist
    request.session = client.session
    assert mfa.mark_verified_by_idp(request, amr) is accepted
    request.session.save()
    assert (client.get("/").status_code == 200) is accepted


def test_it_can_be_told_not_to_trust_the_providers_amr(radiologist: User, rf: Any, settings: Any) -> None:
    settings.PACS_MFA_TRUST_IDP_AMR = False
    request = rf.get("/")
    request.user = radiologist
    request.session = signed_in(radiologist).session
    assert mfa.mark_verified_by_idp(request, ["mfa"]) is False


@pytest.mark.parametrize(
    ("claim", "mapping", "roles"),
    [
        (["radiologist", "unrelated"], {}, {Role.RADIOLOGIST}),
        ("Administrator, auditor", {}, {Role.ADMINISTRATOR, Role.AUDITOR}),
        (["/radiologist"], {}, {Role.RADIOLOGIST}),
        (["pacs-readers"], {"pacs-readers": "radiologist"}, {Role.RADIOLOGIST}),
        (["pacs-readers"], {}, set()),
        (None, {}, set()),
        ({"not": "a list"}, {}, set()),
    ],
)
def test_it_maps_the_roles_claim_to_our_roles(
    settings: Any, claim: Any, mapping: dict[str, str], roles: set[Role]
) -> None:
    settings.OIDC_ROLES_CLAIM = "groups"
    settings.OIDC_ROLES_MAP = mapping
    assert oidc.roles_from_claims({"groups": claim}) == roles


def test_it_replaces_role_groups_but_keeps_other_groups(technologist: User) -> None:
    technologist.groups.add(Group.objects.create(name="night shift"))
    oidc.apply_roles(technologist, {Role.RADIOLOGIST})
    assert set(technologist.groups.values_list("name", flat=True)) == {"radiologist", "night shift"}


def test_it_hides_sso_when_no_provider_is_configured(db: Any, settings: Any) -> None:
    settings.OIDC_RP_CLIENT_ID = ""
    client = Client()
    assert b"Sign in with SSO" not in client.get("/accounts/login/").content
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


def oidc_explicit(settings: Any) -> None:
    settings.OIDC_OP_ISSUER = ""
    settings.OIDC_RP_CLIENT_ID = "pacs"
    settings.OIDC_RP_CLIENT_SECRET = "secret"
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://idp.example/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://idp.example/token"
    settings.OIDC_OP_JWKS_ENDPOINT = "https://idp.example/jwks"


def test_it_starts_sso_with_pkce_nonce_and_state(db: Any, settings: Any) -> None:
    oidc_explicit(settings)
    client = Client()
    assert b"Sign in with SSO" in client.get("/accounts/login/").content
    response = client.get("/oidc/authenticate/?next=/viewer/")
    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://idp.example/authorize"
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert query["client_id"] == "pacs" and query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["nonce"]) >= 32 and len(query["state"]) >= 32
    assert query["redirect_uri"] == "http://testserver/oidc/callback/"


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"iss": "https://other.example", "aud": "pacs"}, "issuer"),
        ({"iss": "https://idp.example", "aud": "someone-else"}, "audience"),
        ({"iss": "https://idp.example", "aud": ["pacs", "other"], "azp": "other"}, "authorized party"),
    ],
)
def test_it_refuses_id_tokens_for_another_issuer_or_audience(
    db: Any, settings: Any, claims: dict[str, Any], problem: str
) -> None:
    from django.core.exceptions import SuspiciousOperation

    oidc_explicit(settings)
    backend = oidc.Backend()
    backend.issuer = "https://idp.example"
    with pytest.raises(SuspiciousOperation, match=problem):
        backend.verify_id_token_claims(claims)
    backend.verify_id_token_claims({"iss": "https://idp.example", "aud": ["pacs", "other"], "azp": "pacs"})


def test_it_keeps_the_backend_inert_without_configuration(db: Any, settings: Any, rf: Any) -> None:
    settings.OIDC_RP_CLIENT_ID = ""
    request = rf.get("/oidc/callback/?code=x&state=y")
    assert oidc.Backend().authenticate(request) is None


def _idp_request(radiologist: User, rf: Any) -> Any:
    request = rf.get("/")
    request.user = radiologist
    request.session = signed_in(radiologist).session
    return request


def test_an_idp_second_factor_is_as_recent_as_the_id_tokens_auth_time_not_as_the_sign_in(
    radiologist: User, rf: Any
) -> None:
    request = _idp_request(radiologist, rf)
    assert mfa.mark_verified_by_idp(request, ["pwd", "otp"], int(time.time()) - 3 * 3600)  # a silent SSO re-login
    assert mfa.is_verified(request) and not mfa.verified_within(request, 300)
    assert mfa.mark_verified_by_idp(request, ["pwd", "otp"], int(time.time()) - 10)  # the user just authenticated
    assert mfa.verified_within(request, 300)


def test_an_idp_sign_in_without_auth_time_verifies_the_session_but_is_never_fresh(radiologist: User, rf: Any) -> None:
    request = _idp_request(radiologist, rf)
    request.session[mfa.VERIFIED_AT_SESSION_KEY] = time.time()  # even a stamp left from before goes
    for missing in (None, "1700000000", True):
        assert mfa.mark_verified_by_idp(request, ["mfa"], missing)
        assert mfa.is_verified(request) and not mfa.verified_within(request, 300)
    event = AuditEvent.objects.filter(action="mfa_verify").latest("id")
    assert event.detail == {"method": "idp", "amr": ["mfa"], "auth_time": "missing"}


def test_an_auth_time_in_the_future_counts_as_now_not_later(radiologist: User, rf: Any) -> None:
    request = _idp_request(radiologist, rf)
    assert mfa.mark_verified_by_idp(request, ["mfa"], time.time() + 86400)
    assert request.session[mfa.VERIFIED_AT_SESSION_KEY] <= time.time()


def test_a_stale_idp_second_factor_is_proved_again_by_a_new_idp_sign_in_with_prompt_login(
    radiologist: User, rf: Any, settings: Any
) -> None:
    oidc_explicit(settings)
    client = signed_in(radiologist)
    request = _idp_request(radiologist, rf)
    request.session = client.session
    assert mfa.mark_verified_by_idp(request, ["pwd", "otp"], int(time.time()) - 3 * 3600)
    request.session.save()
    challenge = client.get("/mfa/verify/?fresh=1&next=/reports/x/")
    target = urlparse(challenge["Location"])
    assert challenge.status_code == 302 and target.path == "/oidc/authenticate/"
    assert parse_qs(target.query) == {"next": ["/reports/x/"], "fresh": ["1"]}
    idp = urlparse(client.get(challenge["Location"])["Location"])
    query = {key: values[0] for key, values in parse_qs(idp.query).items()}
    assert idp.netloc == "idp.example" and (query["prompt"], query["max_age"]) == ("login", "0")
    plain = urlparse(Client().get("/oidc/authenticate/?next=/viewer/")["Location"])
    assert "prompt" not in parse_qs(plain.query) and "max_age" not in parse_qs(plain.query)

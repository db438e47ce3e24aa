"""POST /api/ehr/launch in process: who may ask, what may be asked, and what is answered and audited."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from integrations.models import AuthMethod, EhrIntegration, EhrLaunch, UsedAssertion
from tests.conftest import stow
from tests.integrations.conftest import LAUNCH_PATH, Ehr, assertion_body, audit_reasons, launch_body, token_of

pytestmark = pytest.mark.django_db
AUDIENCE = "http://testserver" + LAUNCH_PATH


def post(body: Any, authorization: str = "", content_type: str = "application/json") -> Any:
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return Client().post(LAUNCH_PATH, data, content_type=content_type, **extra)


def test_an_ehr_with_its_secret_gets_a_one_time_launch_url_whose_token_is_kept_only_as_a_hash(
    ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    response = post(launch_body([site_a_study["study"]]), ehr.basic())
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["launch_url"].startswith("http://testserver/ehr/launch/test-ehr#")
    assert answer["expires_in"] == 120
    assert answer["studies"] == [{"study_instance_uid": site_a_study["study"], "available": True}]
    assert response["Cache-Control"] == "no-store"
    token = token_of(answer["launch_url"])
    assert len(base64.urlsafe_b64decode(token.split(".")[0] + "=")) * 8 >= 128
    launch = EhrLaunch.objects.get()
    assert launch.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    stored = json.dumps(
        [list(v) if isinstance(v, tuple) else v for v in EhrLaunch.objects.values_list().get()], default=str
    )
    assert token not in stored
    event = AuditEvent.objects.get(action="ehr.launch.issue")
    assert (event.outcome, event.actor, event.patient_id) == ("success", "ehr:test-ehr", "PAT-A1")
    assert token not in json.dumps(event.detail) and launch.token_sha256 not in json.dumps(event.detail)


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("", "no credentials: use HTTP Basic or a client assertion"),
        ("Bearer abc", "the Authorization scheme must be Basic"),
        ("Basic !!!", "the Basic credentials are not base64 of UTF-8"),
        ("Basic " + base64.b64encode(b"test-ehr").decode(), "the Basic credentials are not client-id:secret"),
        ("Basic " + base64.b64encode(b"test-ehr:wrong").decode(), "unknown client or wrong secret"),
        ("Basic " + base64.b64encode(b"nobody:wrong").decode(), "unknown client or wrong secret"),
    ],
)
def test_an_ehr_without_good_credentials_gets_401_with_a_basic_challenge_and_is_audited(
    ehr: Ehr, site_a_study: dict[str, Any], authorization: str, reason: str
) -> None:
    response = post(launch_body([site_a_study["study"]]), authorization)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Basic realm="ehr-launch"')
    assert response.json() == {"detail": f"Not authenticated: {reason}."}
    assert audit_reasons("ehr.launch.auth") == [reason]
    assert not EhrLaunch.objects.exists()


def test_a_disabled_integration_is_refused_with_403(ehr: Ehr, site_a_study: dict[str, Any]) -> None:
    EhrIntegration.objects.filter(pk=ehr.integration.pk).update(enabled=False)
    response = post(launch_body([site_a_study["study"]]), ehr.basic())
    assert (response.status_code, response.json()) == (403, {"detail": "This integration is disabled."})
    assert audit_reasons("ehr.launch.issue") == ["disabled"]


def test_a_signed_rs256_assertion_authenticates_once_and_its_jti_cannot_be_replayed(
    jwt_ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    body = assertion_body(jwt_ehr, AUDIENCE, launch_body([site_a_study["study"]]))
    first = post(body)
    assert first.status_code == 201, first.content
    replay = post(body)
    assert replay.status_code == 401
    assert replay.json() == {"detail": "Not authenticated: the assertion was already used (same jti)."}
    assert audit_reasons("ehr.launch.auth") == ["the assertion was already used (same jti)"]
    assert EhrLaunch.objects.count() == 1
    assert UsedAssertion.objects.count() == 1


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://elsewhere.example/token"}, f"the assertion's aud must be {AUDIENCE}"),
        ({"sub": "someone-else"}, "the assertion's sub must be the client id"),
        ({"jti": None}, "the assertion lacks the jti claim"),
        ({"exp": None}, "the assertion lacks the exp claim"),
        ({"iat": None}, "the assertion lacks the iat claim"),
        ({"exp": 1000}, "the assertion has expired"),
        ({"exp": 4102444800, "iat": 4102444700}, "the assertion was issued in the future"),
        ({"exp": 4102444800}, "the assertion may live at most 300 seconds"),
        ({"iss": "unknown-client", "sub": "unknown-client"}, "unknown client"),
    ],
)
def test_a_wrong_assertion_is_refused_with_401_and_audited(
    jwt_ehr: Ehr, site_a_study: dict[str, Any], claims: dict[str, Any], reason: str
) -> None:
    response = post(assertion_body(jwt_ehr, AUDIENCE, launch_body([site_a_study["study"]]), **claims))
    assert response.status_code == 401
    assert response.json() == {"detail": f"Not authenticated: {reason}."}
    assert audit_reasons("ehr.launch.auth") == [reason]
    assert not EhrLaunch.objects.exists()


def test_an_assertion_expired_by_the_clock_is_refused(
    jwt_ehr: Ehr, site_a_study: dict[str, Any], moving_clock: Any
) -> None:
    body = assertion_body(jwt_ehr, AUDIENCE, launch_body([site_a_study["study"]]))
    moving_clock.advance(60 + 31)  # past exp and the 30 s leeway
    response = post(body)
    assert (response.status_code, response.json()["detail"]) == (401, "Not authenticated: the assertion has expired.")


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_an_assertion_signed_with_a_symmetric_or_no_algorithm_is_refused(
    jwt_ehr: Ehr, site_a_study: dict[str, Any], algorithm: str
) -> None:
    jwt_ehr.algorithm = algorithm
    jwt_ehr.private_key = jwt_ehr.integration.public_key_pem if algorithm == "HS256" else None
    try:
        body = assertion_body(jwt_ehr, AUDIENCE, launch_body([site_a_study["study"]]))
    except jwt.InvalidKeyError:  # PyJWT itself refuses to HMAC with a PEM; forge the token by hand
        import hashlib as h
        import hmac

        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        payload = base64.urlsafe_b64encode(
            json.dumps(
                {"iss": "signed-ehr", "sub": "signed-ehr", "aud": AUDIENCE, "iat": 1, "exp": 2, "jti": "x"}
            ).encode()
        ).rstrip(b"=")
        mac = hmac.new(jwt_ehr.integration.public_key_pem.encode(), header + b"." + payload, h.sha256).digest()
        forged = (header + b"." + payload + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
        body = {
            **launch_body([site_a_study["study"]]),
            "client_assertion_type": assertion_body.__defaults__ or "",
            "client_assertion": forged,
        }
        body["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    response = post(body)
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated: the assertion must be signed with RS256 or ES256."}


def test_an_assertion_signed_by_another_key_is_refused(jwt_ehr: Ehr, site_a_study: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    jwt_ehr.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = post(assertion_body(jwt_ehr, AUDIENCE, launch_body([site_a_study["study"]])))
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated: the assertion's signature does not verify."}


def test_an_es256_assertion_is_checked_against_the_ehrs_jwks_url(
    general_site: Any, site_a_study: dict[str, Any], es256_key: Any
) -> None:
    public = jwt.algorithms.ECAlgorithm.to_jwk(es256_key.public_key(), as_dict=True)
    keys = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "ES256"}]}).encode()

    fetches: list[str] = []

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(keys)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        integration = EhrIntegration.objects.create(
            name="JWKS EHR",
            client_id="jwks-ehr",
            auth_method=AuthMethod.PRIVATE_KEY_JWT,
            jwks_url=f"http://127.0.0.1:{server.server_port}/jwks.json",
        )
        integration.sites.add(general_site)
        signer = Ehr(integration, private_key=es256_key, algorithm="ES256", kid="k1")
        response = post(assertion_body(signer, AUDIENCE, launch_body([site_a_study["study"]])))
        assert response.status_code == 201, response.content
        assert len(fetches) == 1
        # Unknown key ids: one fetch again (the EHR may have rotated its keys), then none for a minute.
        for kid in ("forged-1", "forged-2", "forged-3"):
            signer.kid = kid
            refused = post(assertion_body(signer, AUDIENCE, launch_body([site_a_study["study"]])))
            assert refused.status_code == 401
            assert (
                refused.json()["detail"] == "Not authenticated: no key in the integration's JWKS matches the assertion."
            )
        assert len(fetches) == 2
    finally:
        server.shutdown()


HOSTILE = [
    ("unknown member", lambda b: {**b, "scopes": ["everything"]}, "scopes"),
    ("bad UID", lambda b: {**b, "studies": [{"study_instance_uid": "1.2.x"}]}, "studies"),
    ("UID with a path", lambda b: {**b, "studies": [{"study_instance_uid": "../../etc/passwd"}]}, "studies"),
    ("both keys", lambda b: {**b, "studies": [{"study_instance_uid": "1.2.3", "accession_number": "A"}]}, "studies"),
    ("no studies", lambda b: {**b, "studies": []}, "studies"),
    ("too many studies", lambda b: {**b, "studies": [{"accession_number": f"A{i}"} for i in range(21)]}, "studies"),
    ("long accession", lambda b: {**b, "studies": [{"accession_number": "A" * 17}]}, "studies"),
    ("backslash in patient", lambda b: {**b, "patient": {"id": "PAT\\X"}}, "patient"),
    ("control in patient", lambda b: {**b, "patient": {"id": "PAT\x1b[31m"}}, "patient"),
    ("NUL in name", lambda b: {**b, "clinician": {**b["clinician"], "name": "Ada\x00"}}, "clinician"),
    ("bidi override in name", lambda b: {**b, "clinician": {**b["clinician"], "name": "Ada\u202e"}}, "clinician"),
    ("clinician id with spaces", lambda b: {**b, "clinician": {**b["clinician"], "id": "a b"}}, "clinician"),
    ("bad e-mail", lambda b: {**b, "clinician": {**b["clinician"], "email": "not-an-address"}}, "clinician"),
    ("no patient", lambda b: {k: v for k, v in b.items() if k != "patient"}, "patient"),
    ("patient as a string", lambda b: {**b, "patient": "PAT-A1"}, "patient"),
    ("return URL elsewhere", lambda b: {**b, "return_url": "https://evil.example/"}, "return_url"),
]


@pytest.mark.parametrize(("case", "change", "member"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_or_wrong_body_is_refused_with_400_naming_the_member(
    ehr: Ehr, site_a_study: dict[str, Any], case: str, change: Any, member: str
) -> None:
    response = post(change(launch_body([site_a_study["study"]])), ehr.basic())
    assert response.status_code == 400, response.content
    assert member in response.json()
    assert not EhrLaunch.objects.exists()
    assert audit_reasons("ehr.launch.issue") == ["invalid request"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ("clinician=x", "application/x-www-form-urlencoded", 415),
        ("x" * (64 * 1024 + 1), "application/json", 413),
    ],
    ids=["malformed JSON", "not an object", "a form", "too large"],
)
def test_a_body_that_is_not_a_small_json_object_gets_a_precise_status(
    ehr: Ehr, body: str, content_type: str, status: int
) -> None:
    response = post(body, ehr.basic(), content_type=content_type)
    assert response.status_code == status, response.content
    assert "detail" in response.json() or "non_field_errors" in response.json()


def test_a_study_of_another_patient_is_refused_with_403_and_audited(
    ehr: Ehr, site_a_study: dict[str, Any], owner_client: Client
) -> None:
    other = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(other, "CT", count=1)).status_code == 200
    response = post(launch_body([site_a_study["study"], other.study_uid]), ehr.basic())
    assert response.status_code == 403
    assert "another patient" in response.json()["detail"]
    event = AuditEvent.objects.get(action="ehr.launch.issue")
    assert (event.outcome, event.study_instance_uid) == ("failure", other.study_uid)
    assert not EhrLaunch.objects.exists()


def test_a_study_of_a_site_the_integration_may_not_open_is_refused_with_403(
    other_ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    response = post(launch_body([site_a_study["study"]]), other_ehr.basic())
    assert response.status_code == 403
    assert not EhrLaunch.objects.exists()
    assert audit_reasons("ehr.launch.issue")[0].startswith("a requested study belongs to another patient")


def test_an_accession_not_yet_arrived_is_accepted_as_waiting(ehr: Ehr, general_site: Any) -> None:
    response = post(launch_body(accessions=["ACC-LATER"]), ehr.basic())
    assert response.status_code == 201
    assert response.json()["studies"] == [{"accession_number": "ACC-LATER", "available": False}]


def test_the_openapi_schema_describes_the_launch_for_signed_in_users_only(ehr: Ehr, reader: Any) -> None:
    assert Client().get("/api/schema/").status_code == 401  # a Bearer challenge: tokens read the schema too
    client = Client()
    client.force_login(reader)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    operation = schema["paths"]["/api/ehr/launch"]["post"]
    assert operation["operationId"] == "ehr_launch"
    assert set(operation["responses"]) >= {"201", "400", "401", "403", "413", "415"}
    assert schema["components"]["securitySchemes"]["ehrClient"]["scheme"] == "basic"


def test_basic_and_an_assertion_together_are_refused(ehr: Ehr, jwt_ehr: Ehr, site_a_study: dict[str, Any]) -> None:
    response = post(assertion_body(jwt_ehr, AUDIENCE, launch_body([site_a_study["study"]])), ehr.basic())
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated: use HTTP Basic or a client assertion, not both."}

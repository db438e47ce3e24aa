"""Sign-in, lockout, password reset, session timeouts and "sign out everywhere"."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client, RequestFactory
from django.utils import timezone

from audit.models import AuditEvent
from portal.accounts.authevents import LAST_SEEN, SIGNED_IN_AT
from portal.accounts.roles import Role
from portal.models import PasswordResetRequest, SignInFailure
from tests.conftest import role_user

PASSWORD = "a long and proper passphrase 7"
LOGIN = "/accounts/login/"


@pytest.fixture
def tech(general_site: Any) -> User:
    user = role_user("tech", Role.TECHNOLOGIST, general_site)
    user.set_password(PASSWORD)
    user.email = "tech@example.org"
    user.save()
    return user


def sign_in(client: Client, username: str, password: str, **extra: Any) -> Any:
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def last(action: str) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action).order_by("-id").first()
    assert event is not None, f"no {action!r} record"
    return event


def test_the_sign_in_page_has_no_inline_script_or_style(client: Client) -> None:
    html = client.get(LOGIN).content.decode()
    assert '<form method="post"' in html and 'name="password"' in html
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)


def test_signing_in_lands_on_the_home_page_and_is_audited(client: Client, tech: User) -> None:
    response = sign_in(client, "tech", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert b'href="/viewer/"' in home.content and b"Sign out" in home.content
    assert b"Administration" not in home.content
    event = last("sign-in")
    assert (event.actor, event.outcome, event.actor_id) == ("tech", "success", tech.pk)


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(client: Client, tech: User) -> None:
    wrong = sign_in(client, "tech", "not the password at all")
    unknown = sign_in(client, "nobody-here", "not the password at all")
    assert wrong.status_code == unknown.status_code == 200
    message = b"Please enter a correct username and password"
    assert message in wrong.content and message in unknown.content
    assert list(AuditEvent.objects.filter(action="sign-in").values_list("actor", "outcome")) == [
        ("tech", "failure"),
        ("nobody-here", "failure"),
    ]


@pytest.mark.parametrize("username", ["tech", "no-such-user"])
def test_five_failures_lock_a_user_name_even_against_the_right_password(
    client: Client, tech: User, username: str
) -> None:
    for _ in range(5):
        sign_in(client, username, "wrong password, again")
    response = sign_in(client, username, PASSWORD)
    assert response.status_code == 200
    assert b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session
    assert last("sign-in-lockout").actor == username
    assert last("sign-in").outcome == "locked"


def test_a_locked_user_name_is_locked_for_every_form_that_checks_passwords(tech: User) -> None:
    for _ in range(5):
        sign_in(Client(), "tech", "wrong password, again")
    request = RequestFactory().post("/admin/login/")
    assert authenticate(request, username="tech", password=PASSWORD) is None


def test_the_lock_lifts_when_the_failures_leave_the_window(client: Client, tech: User) -> None:
    for _ in range(5):
        sign_in(client, "tech", "wrong password, again")
    SignInFailure.objects.update(at=timezone.now() - timedelta(minutes=16))
    assert sign_in(client, "tech", PASSWORD).status_code == 302


def test_too_many_failures_from_one_address_lock_that_address(settings: Any, tech: User) -> None:
    settings.PACS_SIGNIN_MAX_FAILURES_PER_IP = 3
    for n in range(3):
        sign_in(Client(), f"guess-{n}", "wrong password", REMOTE_ADDR="198.51.100.7")
    blocked = sign_in(Client(), "tech", PASSWORD, REMOTE_ADDR="198.51.100.7")
    assert b"Too many failed sign-in attempts" in blocked.content
    assert sign_in(Client(), "tech", PASSWORD, REMOTE_ADDR="198.51.100.8").status_code == 302


def test_a_successful_sign_in_forgets_earlier_failures(client: Client, tech: User) -> None:
    for _ in range(4):
        sign_in(client, "tech", "wrong password, again")
    assert sign_in(client, "tech", PASSWORD).status_code == 302
    assert not SignInFailure.objects.filter(username="tech").exists()


def test_password_reset_never_reveals_whether_an_account_exists(client: Client, tech: User) -> None:
    known = client.post("/accounts/password/reset/", {"email": "tech@example.org"})
    unknown = client.post("/accounts/password/reset/", {"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"] == "/accounts/password/reset/sent/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["tech@example.org"]
    link = re.search(r"http://testserver(/accounts/password/reset/\S+/)", str(mail.outbox[0].body))
    assert link is not None
    form = client.get(link.group(1), follow=True)
    assert form.status_code == 200 and b"Choose a new password" in form.content
    new = "another quite long passphrase 9"
    done = client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert done.status_code == 302 and done["Location"] == "/accounts/password/reset/complete/"
    assert User.objects.get(pk=tech.pk).check_password(new)
    assert last("password-reset").actor == "tech"


RESET = "/accounts/password/reset/"


def request_reset(email: str, ip: str = "192.0.2.10") -> Any:
    return Client().post(RESET, {"email": email}, REMOTE_ADDR=ip)


@pytest.mark.parametrize("email", ["tech@example.org", "nobody@example.org"])
def test_reset_mail_to_one_address_is_throttled_with_the_same_answer(tech: User, settings: Any, email: str) -> None:
    settings.PACS_PASSWORD_RESET_MAX_PER_EMAIL = 2
    answers = [request_reset(email.upper() if n % 2 else email, ip=f"192.0.2.{n}") for n in range(4)]
    assert {(a.status_code, a["Location"]) for a in answers} == {(302, "/accounts/password/reset/sent/")}
    assert len(mail.outbox) == (2 if email.startswith("tech") else 0)
    events = AuditEvent.objects.filter(action="password-reset-request").order_by("id")
    assert [e.outcome for e in events] == ["success", "success", "throttled", "throttled"]
    assert events.last().detail == {"email": email, "limit": "email"}  # type: ignore[union-attr]


def test_reset_requests_from_one_client_address_are_throttled(tech: User, settings: Any) -> None:
    settings.PACS_PASSWORD_RESET_MAX_PER_IP = 3
    for n in range(3):
        request_reset(f"someone-{n}@example.org", ip="198.51.100.9")
    assert request_reset("tech@example.org", ip="198.51.100.9").status_code == 302
    assert mail.outbox == []
    assert last("password-reset-request").detail == {"email": "tech@example.org", "limit": "ip"}
    request_reset("tech@example.org", ip="198.51.100.10")
    assert len(mail.outbox) == 1


def test_the_reset_throttle_lifts_when_the_requests_leave_the_window(tech: User, settings: Any) -> None:
    settings.PACS_PASSWORD_RESET_MAX_PER_EMAIL = 1
    request_reset("tech@example.org")
    request_reset("tech@example.org")
    assert len(mail.outbox) == 1
    PasswordResetRequest.objects.update(at=timezone.now() - timedelta(hours=2))
    request_reset("tech@example.org")
    assert len(mail.outbox) == 2
    assert PasswordResetRequest.objects.count() == 1  # old rows are pruned


def test_signing_out_takes_a_post_and_is_audited(client: Client, tech: User) -> None:
    client.force_login(tech)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == LOGIN
    assert client.get("/").status_code == 302
    assert last("sign-out").detail == {"reason": "user"}


def age_session(client: Client, key: str, seconds: int) -> None:
    session = client.session
    session[key] = int(time.time()) - seconds
    session.save()


def test_an_idle_session_ends(client: Client, tech: User, settings: Any) -> None:
    settings.PACS_SESSION_IDLE_SECONDS = 900
    client.force_login(tech)
    assert client.get("/").status_code == 200
    age_session(client, LAST_SEEN, 901)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)
    assert last("sign-out").detail == {"reason": "idle timeout"}


def test_an_idle_session_gets_401_from_dicomweb(client: Client, tech: User, site_a_study: dict) -> None:
    client.force_login(tech)
    url = f"/dicom-web/studies/{site_a_study['study']}/metadata"
    assert client.get(url).status_code == 200
    age_session(client, LAST_SEEN, 10_000)
    assert client.get(url).status_code == 401


def test_an_active_session_still_ends_at_the_absolute_limit(client: Client, tech: User, settings: Any) -> None:
    client.force_login(tech)
    age_session(client, SIGNED_IN_AT, settings.SESSION_COOKIE_AGE + 1)
    assert client.get("/").status_code == 302
    assert last("sign-out").detail == {"reason": "absolute timeout"}


def test_signing_out_everywhere_ends_the_users_other_sessions(tech: User) -> None:
    laptop, workstation, someone_else = Client(), Client(), Client()
    laptop.force_login(tech)
    workstation.force_login(tech)
    other = role_user("other-tech", Role.TECHNOLOGIST)
    someone_else.force_login(other)
    response = laptop.post("/accounts/logout/everywhere/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert workstation.get("/").status_code == 302
    assert laptop.get("/").status_code == 302
    assert someone_else.get("/").status_code == 200
    assert last("sign-out-everywhere").actor == "tech"
    fresh = Client()
    fresh.force_login(tech)
    assert fresh.get("/").status_code == 200

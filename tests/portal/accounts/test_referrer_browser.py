"""Why Referrer-Policy is ``same-origin`` and not ``no-referrer``: proved in Chromium.

With ``no-referrer`` on the sign-in page, Chromium sends ``Origin: null`` with
the same-origin form POST, and Django's CSRF origin check rightly refuses it.
``same-origin`` sends the origin to ourselves (sign-in works) and still never
sends a referrer to another origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long and proper passphrase 7"


@pytest.fixture
def page(chromium: Any, live_server: Any) -> Iterator[Any]:
    context = chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(20000)
    yield context.new_page()
    context.close()


def submit_sign_in(page: Any, policy: str | None) -> tuple[int, str]:
    """Sign in through the form; optionally serve the form page with another Referrer-Policy."""
    User.objects.create_user("plain", password=PASSWORD)
    if policy is not None:

        def rewrite(route: Any) -> None:
            response = route.fetch()
            route.fulfill(response=response, headers={**response.headers, "referrer-policy": policy})

        page.route(
            "**/accounts/login/", lambda route: rewrite(route) if route.request.method == "GET" else route.fallback()
        )
    origins: list[str] = []
    page.on("request", lambda r: origins.append(r.headers.get("origin", "")) if r.method == "POST" else None)
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "plain")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    return answer.value.status, origins[0]


def test_our_same_origin_policy_lets_the_sign_in_form_through_csrf(page: Any, live_server: Any) -> None:
    status, origin = submit_sign_in(page, None)
    assert (status, origin) == (302, live_server.url)


def test_no_referrer_would_make_chromium_send_a_null_origin_that_csrf_refuses(page: Any) -> None:
    status, origin = submit_sign_in(page, "no-referrer")
    assert (status, origin) == (403, "null")

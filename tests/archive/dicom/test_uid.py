"""UID validation (PS3.5 §9): the gate every storage key and query value passes."""

from __future__ import annotations

import pytest
from django.test import Client

from archive.dicom.uid import InvalidUID, is_valid_uid, validate_uid


@pytest.mark.parametrize("value", ["1", "1.2.840.10008.1.2.1", "2.25." + "1" * 59])
def test_it_accepts_digit_components_joined_by_dots(value: str) -> None:
    assert is_valid_uid(value)
    assert validate_uid(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1.2.3\n",
        "\n1.2.3",
        "1.2.3\r\n",
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.3a",
        "../../etc/passwd",
        "1.2;DROP TABLE",
        "1.2 3",
        "2.25." + "1" * 60,
        None,
        12345,
    ],
    ids=repr,
)
def test_it_refuses_anything_else(value: object) -> None:
    assert not is_valid_uid(value)
    with pytest.raises(InvalidUID):
        validate_uid(value, "Study Instance UID")


def test_a_uid_with_a_trailing_newline_in_a_url_is_a_bad_request(admin_client_token: Client) -> None:
    response = admin_client_token.get("/dicom-web/studies/1.2.3%0A/metadata", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 400
    assert b"not a valid" in response.content

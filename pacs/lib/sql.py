"""Raw SQL built once per database vendor from model metadata.

The hottest statements (an instance insert, an audit append, the bearer-token
lookup) are plain SQL because the ORM's query building cost more than running
them. Their text depends only on the models and on the vendor's quoting, so it
is built the first time a vendor is met and reused after that.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from django.db.backends.base.base import BaseDatabaseWrapper

T = TypeVar("T")


def per_vendor(build: Callable[[Callable[[str], str]], T]) -> Callable[[BaseDatabaseWrapper], T]:
    """Wrap ``build(quote_name)`` so that it runs once per vendor; the result is shared after that.

    ``build`` may interpolate only model metadata, quoted with the function it
    is given; values stay parameters.
    """
    built: dict[str, T] = {}

    @functools.wraps(build)
    def statements(connection: BaseDatabaseWrapper) -> T:
        found = built.get(connection.vendor)
        if found is None:
            found = built[connection.vendor] = build(connection.ops.quote_name)
        return found

    return statements

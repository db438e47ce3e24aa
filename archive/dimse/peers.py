"""Known DICOM peers: AE titles, their addresses, and the site their studies belong to.

``PACS_DIMSE_ALLOWED`` is parsed here, e.g. ``CT1@10.0.0.21=general,MR2=general``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from archive.models import Site

log = logging.getLogger(__name__)
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}\Z")  # PS3.5 AE: 16 chars, no backslash or control


class ConfigurationError(ValueError):
    """``PACS_DIMSE_ALLOWED`` (or an AE title) is malformed."""


@dataclass(frozen=True)
class AllowedPeer:
    """One entry of ``PACS_DIMSE_ALLOWED``: a calling AE title, optionally bound to addresses."""

    ae_title: str
    site_code: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def matches(self, ae_title: str, host: str) -> bool:
        if ae_title != self.ae_title:
            return False
        if self.network is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address in self.network


def validate_ae_title(value: str, what: str = "AE title") -> str:
    value = value.strip()
    if not _AE_TITLE.match(value):
        raise ConfigurationError(f"{what} must be 1-16 printable characters without a backslash: {value!r}")
    return value


def parse_allowed(raw: str) -> list[AllowedPeer]:
    """Parse ``"AE[@host-or-network]=site,..."``; raise :class:`ConfigurationError` on a bad entry."""
    peers = []
    for entry in raw.split(","):
        if not entry.strip():
            continue
        who, sep, site = entry.rpartition("=")
        if not sep or not who.strip() or not site.strip():
            raise ConfigurationError(f"PACS_DIMSE_ALLOWED entries look like AE@host=site, not {entry!r}")
        title, at, host = who.partition("@")
        network = None
        if at:
            try:
                network = ipaddress.ip_network(host.strip(), strict=False)
            except ValueError:
                raise ConfigurationError(f"PACS_DIMSE_ALLOWED: {host!r} is not an IP address or network") from None
        peers.append(AllowedPeer(validate_ae_title(title, "PACS_DIMSE_ALLOWED AE title"), site.strip(), network))
    return peers


def missing_sites(peers: list[AllowedPeer]) -> list[str]:
    """Site codes named by ``peers`` that no :class:`Site` has."""
    codes = {p.site_code for p in peers}
    return sorted(codes - set(Site.objects.filter(code__in=codes).values_list("code", flat=True)))

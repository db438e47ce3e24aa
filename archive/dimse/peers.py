"""Known DICOM peers: which registered device an association comes from, and the bootstrap list.

Peers are :class:`~archive.models.DicomDevice` rows (Django admin, or
``manage.py dicom_device``). :func:`identify` finds the device of a calling AE
title and address for each new association, so a change in the admin applies
to the next association without a restart.

``PACS_DIMSE_ALLOWED`` (``CT1@10.0.0.21=general,MR2=general``) is only a
bootstrap: :func:`bootstrap_devices` adds each entry as a store-only device
when no device has its AE title yet, and leaves existing devices as they are
(the admin's word wins), when the listener starts.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from django.db import transaction

from archive.models import AE_TITLE, DicomDevice, Site, canonical_host
from audit.adminlog import record_change

log = logging.getLogger(__name__)
BOOTSTRAP_ACTOR = "PACS_DIMSE_ALLOWED"


class ConfigurationError(ValueError):
    """``PACS_DIMSE_ALLOWED`` (or an AE title) is malformed."""


@dataclass(frozen=True)
class AllowedPeer:
    """One entry of ``PACS_DIMSE_ALLOWED``: a calling AE title, optionally bound to addresses."""

    ae_title: str
    site_code: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """``value`` without its non-significant spaces; :class:`ConfigurationError` unless it is an AE title."""
    value = value.strip()
    if not AE_TITLE.match(value):
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


def bootstrap_devices(peers: list[AllowedPeer]) -> list[DicomDevice]:
    """Add each peer without a device of its AE title as a store-only device; the devices added.

    Raises :class:`ConfigurationError` (and adds nothing) when a peer names a site that does not exist.
    """
    unknown = missing_sites(peers)
    if unknown:
        raise ConfigurationError(f"PACS_DIMSE_ALLOWED names sites that do not exist: {', '.join(unknown)}")
    added = []
    with transaction.atomic():
        for peer in peers:
            if DicomDevice.objects.filter(ae_title=peer.ae_title).exists():
                continue
            device = DicomDevice.objects.create(
                ae_title=peer.ae_title,
                host=canonical_host(peer.network) if peer.network is not None else "",
                site=Site.objects.get(code=peer.site_code),
                may_store=True,
                description="Added from PACS_DIMSE_ALLOWED",
            )
            record_change("add", device, "added from PACS_DIMSE_ALLOWED (store only)", actor=BOOTSTRAP_ACTOR)
            added.append(device)
    return added


@dataclass(frozen=True)
class Identified:
    """Who is calling: their device (None: no enabled device matches) and, if none, why."""

    device: DicomDevice | None
    reason: str = ""


def identify(calling_ae: str, address: str) -> Identified:
    """The enabled device a connection from ``address`` calling as ``calling_ae`` is, or why there is none."""
    device = DicomDevice.objects.select_related("site").filter(ae_title=calling_ae).first()
    if device is None:
        return Identified(None, "unknown calling AE title")
    if not device.enabled:
        return Identified(None, "device disabled")
    if not device.accepts_address(address):
        return Identified(None, f"address not allowed for this device (bound to {device.host})")
    return Identified(device)

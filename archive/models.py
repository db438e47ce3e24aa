"""The archive index: Site, Patient, Study, Series, Instance; API tokens, DICOM devices, storage commitments.

The index is derived data: every row can be rebuilt from the stored Part 10
files alone (``manage.py reindex``). Query attributes live in indexed columns;
the DICOM JSON of each instance and the byte ranges of each frame are
precomputed at ingest so that reads never parse DICOM. Person names are kept
as received and, upper-cased, in ``*_search`` columns for case-insensitive
matching that can still use an index.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.utils import timezone

from archive.dicom.uid import is_valid_uid
from archive.storage import registry
from archive.storage.registry import get_storage


class Site(models.Model):
    """A hospital or clinic that owns studies; its users see its studies."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    institution_names = models.TextField(
        blank=True,
        help_text="(0008,0080) Institution Name values that belong to this site, one per line.",
    )
    # Kept for the notes administrators wrote in it; ingest does not read it. C-STORE peers
    # map to a site through their DicomDevice.
    source_aets = models.TextField(
        blank=True,
        help_text="Notes only: not read by the archive. DICOM peers are mapped to sites by their DICOM device.",
    )
    cost_tag = models.SlugField(
        max_length=32,
        blank=True,
        default="",
        help_text="Groups sites for storage budgets (e.g. a cost centre): a budget may cover every site with a tag.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def institution_name_list(self) -> list[str]:
        return [n.strip().upper() for n in self.institution_names.splitlines() if n.strip()]


class Patient(models.Model):
    """A patient as identified by (0010,0020) Patient ID and its issuer."""

    patient_id = models.CharField(max_length=64, db_index=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True, default="")
    patient_name = models.CharField(max_length=1024, blank=True, default="")
    patient_name_search = models.CharField(max_length=1024, blank=True, default="", db_index=True)
    patient_birth_date = models.CharField(max_length=8, blank=True, default="")
    patient_sex = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient_id", "issuer_of_patient_id"], name="unique_patient_identity")
        ]

    def __str__(self) -> str:
        return f"{self.patient_id} {self.patient_name}"


class Availability(models.TextChoices):
    """(0008,0056) Instance Availability, Defined Terms."""

    ONLINE = "ONLINE"
    NEARLINE = "NEARLINE"
    OFFLINE = "OFFLINE"


class Study(models.Model):
    """(0020,000D) Study Instance UID and its query attributes."""

    study_instance_uid = models.CharField(max_length=64, unique=True)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="studies")
    study_date = models.CharField(max_length=8, blank=True, default="", db_index=True)
    study_time = models.CharField(max_length=16, blank=True, default="")
    accession_number = models.CharField(max_length=64, blank=True, default="", db_index=True)
    study_id = models.CharField(max_length=64, blank=True, default="")
    study_description = models.CharField(max_length=1024, blank=True, default="")
    referring_physician_name = models.CharField(max_length=1024, blank=True, default="")
    referring_physician_search = models.CharField(max_length=1024, blank=True, default="", db_index=True)
    institution_name = models.CharField(max_length=1024, blank=True, default="")
    modalities_in_study = models.CharField(max_length=200, blank=True, default="")
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    attributes = models.JSONField(default=dict, help_text="Study-level DICOM JSON (patient and study modules).")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    last_accessed_at = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        help_text="Last read (WADO-RS, viewer, C-GET/C-MOVE, export), recorded at most once an hour; empty: never.",
    )
    trashed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="In the trash since then: hidden from every read, objects kept (archive/ingest/trash.py).",
    )

    class Meta:
        verbose_name_plural = "studies"
        indexes = [
            # QIDO's default order (most recent first), walked with LIMIT; id makes paging stable.
            models.Index(fields=["-study_date", "-study_time", "-id"], name="study_recent"),
        ]

    def __str__(self) -> str:
        return self.study_instance_uid


class Series(models.Model):
    """(0020,000E) Series Instance UID and its query attributes."""

    series_instance_uid = models.CharField(max_length=64, unique=True)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    modality = models.CharField(max_length=16, blank=True, default="", db_index=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=1024, blank=True, default="")
    series_date = models.CharField(max_length=8, blank=True, default="")
    series_time = models.CharField(max_length=16, blank=True, default="")
    body_part_examined = models.CharField(max_length=64, blank=True, default="")
    number_of_instances = models.PositiveIntegerField(default=0)
    attributes = models.JSONField(default=dict, help_text="Series-level DICOM JSON.")

    class Meta:
        verbose_name_plural = "series"
        indexes = [
            models.Index(fields=["study", "series_number"], name="series_order"),
            # ModalitiesInStudy: the studies holding a series of a modality, without reading rows.
            models.Index(fields=["modality", "study"], name="series_modality_study"),
        ]

    def __str__(self) -> str:
        return self.series_instance_uid


class Instance(models.Model):
    """(0008,0018) SOP Instance UID: one stored Part 10 object."""

    sop_instance_uid = models.CharField(max_length=64, unique=True)
    # No index of its own: instance_order and instance_availability both lead with it (one page write less per STOW).
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances", db_index=False)
    sop_class_uid = models.CharField(max_length=64, db_index=True)
    instance_number = models.IntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64)
    number_of_frames = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=300)
    tier = models.CharField(max_length=32, default="hot", help_text="The name of the storage tier that holds it.")
    stored_size = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes it takes on its tier (zstd: compressed), set by the mover; empty: its Part 10 size.",
    )
    availability = models.CharField(max_length=16, choices=Availability.choices, default=Availability.ONLINE)
    metadata = models.TextField(help_text="DICOM JSON of the instance, bulk data as BulkDataURI.")
    frames = models.JSONField(
        null=True, blank=True, help_text="Per frame, the [offset, length] byte ranges of its data in the file."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["series", "instance_number"], name="instance_order"),
            # (0008,0056) at study and series level: find the few instances that are not ONLINE.
            models.Index(fields=["series", "availability"], name="instance_availability"),
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid

    def open_stored(self) -> BinaryIO:
        """The stored Part 10 object, open for reading from its tier (where the index says it is now)."""
        try:
            return get_storage(self.tier).open(self.storage_key)
        except FileNotFoundError:
            if not self._moved():
                raise
            return get_storage(self.tier).open(self.storage_key)

    def read_stored_ranges(self, ranges: list[list[int]]) -> bytes:
        """The ``[offset, length]`` ranges of the stored object, concatenated (a frame's bytes)."""
        try:
            return get_storage(self.tier).read_ranges(self.storage_key, ranges)
        except FileNotFoundError:
            if not self._moved():
                raise
            return get_storage(self.tier).read_ranges(self.storage_key, ranges)

    def _moved(self) -> bool:
        """Whether the mover has moved this object since the row was read (then the row follows it)."""
        now = Instance.objects.filter(pk=self.pk).values_list("tier", "storage_key").first()
        if now is None or now == (self.tier, self.storage_key):
            return False
        self.tier, self.storage_key = now
        return True


class PersonNameWord(models.Model):
    """One word of a person name's alphabetic group, upper-cased, for fuzzy matching by an index.

    QIDO ``fuzzymatching=true`` matches each query word against the start of
    any word of the name; a range on ``word`` finds those names through the
    (word, owner) indexes instead of a regex over every name. Rows belong to
    a patient ((0010,0010) Patient's Name) or to a study ((0008,0090)
    Referring Physician's Name) and are written at ingest
    (:func:`archive.ingest.index.name_words`).
    """

    word = models.CharField(max_length=64)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, null=True, blank=True, related_name="name_words")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, null=True, blank=True, related_name="referring_words")

    class Meta:
        indexes = [
            models.Index(fields=["word", "patient"], name="name_word_patient"),
            models.Index(fields=["word", "study"], name="name_word_study"),
        ]

    def __str__(self) -> str:
        return self.word


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for machine clients; only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=12, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: Any, name: str = "", expires_at: Any = None) -> tuple[ApiToken, str]:
        """Create a token and return it with its one-time plain text."""
        raw = "pacs_" + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, prefix=raw[:12], token_hash=hash_token(raw), expires_at=expires_at
        )
        return token, raw

    def is_usable(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())


#: PS3.5 Table 6.2-1, AE: 1-16 characters of the default repertoire, no backslash, no control character.
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}\Z")


def validate_ae_title(value: str) -> None:
    """Raise :class:`ValidationError` unless ``value`` is an AE title (PS3.5): 1-16 characters, not all spaces."""
    if not AE_TITLE.match(value) or not value.strip():
        raise ValidationError(
            "An AE title is 1-16 printable ASCII characters, without a backslash and not only spaces: %(value)r",
            params={"value": value},
        )


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address (``10.0.0.21``) or network (``10.0.0.0/24``); :class:`ValueError` for anything else."""
    return ipaddress.ip_network(value.strip(), strict=False)


def canonical_host(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """How a device's host is kept: ``10.0.0.21`` for one address, ``10.0.0.0/24`` for a network."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def validate_network(value: str) -> None:
    try:
        parse_network(value)
    except ValueError:
        raise ValidationError(
            "Give an IP address (10.0.0.21) or network (10.0.0.0/24), not %(value)r", params={"value": value}
        ) from None


class DicomDevice(models.Model):
    """A DICOM application entity the node talks to: a modality, a workstation, another PACS.

    The DICOM node (archive/dimse/) accepts an association only from an
    enabled device whose AE title is the calling AE title and, when ``host``
    is set, whose address or network the connection comes from; then each
    operation needs its capability (C-STORE: ``may_store``). What a device
    stores belongs to its ``site``. AE titles are unique: a PACS identifies a
    peer by its calling AE title, as most PACS do.
    """

    ae_title = models.CharField(
        "AE title",
        max_length=16,
        unique=True,
        validators=[validate_ae_title],
        help_text="The calling AE title the device uses (1-16 characters, case-sensitive).",
    )
    host = models.CharField(
        max_length=64,
        blank=True,
        default="",
        validators=[validate_network],
        help_text=(
            "IP address or network (CIDR, e.g. 10.0.0.0/24) its associations must come from. "
            "Empty: any address, so anyone who knows the AE title can use it; set it outside a test bench."
        ),
    )
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Where the device listens (for C-MOVE to it); empty if it does not.",
    )
    site = models.ForeignKey(
        Site, on_delete=models.PROTECT, related_name="dicom_devices", help_text="Where the studies it sends belong."
    )
    may_store = models.BooleanField("may store (C-STORE)", default=False)
    may_query = models.BooleanField("may query (C-FIND)", default=False)
    may_retrieve = models.BooleanField("may retrieve (C-MOVE, C-GET)", default=False)
    is_move_destination = models.BooleanField("is a C-MOVE destination", default=False)
    enabled = models.BooleanField(default=True, help_text="A disabled device cannot associate.")
    description = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["ae_title"]
        verbose_name = "DICOM device"

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}" if self.host else self.ae_title

    def clean(self) -> None:
        """Keep the AE title without its non-significant spaces and the host in its canonical form."""
        self.ae_title = self.ae_title.strip()
        if self.host.strip():
            try:
                self.host = canonical_host(parse_network(self.host))
            except ValueError:
                return  # the field's validator says why
        else:
            self.host = ""

    def accepts_address(self, address: str) -> bool:
        """Whether a connection from ``address`` may be this device (any address when ``host`` is empty)."""
        if not self.host:
            return True
        try:
            peer = ipaddress.ip_address(address)
            network = parse_network(self.host)
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        return peer in network

    def capabilities(self) -> list[str]:
        flags = [
            ("store", self.may_store),
            ("query", self.may_query),
            ("retrieve", self.may_retrieve),
            ("move-destination", self.is_move_destination),
        ]
        return [name for name, on in flags if on]


class StorageCommitment(models.Model):
    """One Storage Commitment request (N-ACTION, PS3.4 J.3.2) and the delivery of its report (N-EVENT-REPORT).

    The row is the queue: it is written, with the request's audit record, before
    the N-ACTION is answered, so a request is never lost; the DICOM node
    (:mod:`archive.dimse.commitment`) checks each referenced instance once
    (``result``), then delivers the report on the requesting association or
    on a new one, and retries from this row until ``delivered`` or ``expired``.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        EXPIRED = "expired"

    transaction_uid = models.CharField("(0008,1195) Transaction UID", max_length=64, db_index=True)
    reused = models.BooleanField(
        default=False, help_text="The Transaction UID was used by an earlier request: every reference fails (0x0131)."
    )
    device = models.ForeignKey(
        DicomDevice, on_delete=models.SET_NULL, null=True, blank=True, related_name="storage_commitments"
    )
    calling_ae = models.CharField(max_length=16)
    peer_address = models.CharField(max_length=64, help_text="The address the N-ACTION came from.")
    references = models.JSONField(help_text="The (0008,1199) Referenced SOP Sequence: [[class UID, instance UID], ...]")
    result = models.JSONField(
        null=True,
        blank=True,
        help_text='Once checked: {"committed": [[class, instance]], "failed": [[class, instance, reason]]}',
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(help_text="No process tries to deliver the report before this time.")
    last_error = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="commitment_due")]
        constraints = [
            # One request per Transaction UID is taken as new; later ones are kept as ``reused`` (PS3.4 J.3.3).
            models.UniqueConstraint(
                fields=["transaction_uid"], condition=models.Q(reused=False), name="commitment_transaction_uid_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.calling_ae} {self.transaction_uid} ({self.state})"


class Retrieval(models.TextChoices):
    """How soon a tier's objects can be read."""

    IMMEDIATE = "immediate", "immediate"
    MINUTES = "minutes", "minutes (needs a restore)"
    HOURS = "hours", "hours (needs a restore)"
    #: Media that need a person (disks removed, tapes on a shelf): OFFLINE, never restored automatically.
    MANUAL = "manual", "offline (an administrator brings the media back)"


class TierBackend(models.TextChoices):
    FILESYSTEM = "filesystem", "filesystem (files as received)"
    ZSTD = "zstd", "zstd-compressed filesystem (seekable, lossless)"
    S3 = "s3", "S3-compatible object storage"


class Tier(models.Model):
    """A named storage tier: where objects live, how fast they come back, and what that costs.

    ``hot`` and ``cold`` (the embedded default) and every tier named in
    ``PACS_TIERS`` are defined by the environment: their rows mirror it
    (``manage.py tiers status`` writes them) and only costs and the
    description are edited here. Other tiers are defined by their row.
    Instance rows name their tier (:attr:`Instance.tier`).
    """

    name = models.SlugField(max_length=32, unique=True)
    backend = models.CharField(max_length=16, choices=TierBackend.choices, default=TierBackend.FILESYSTEM)
    root = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="Filesystem tiers: the folder (empty: PACS_STORAGE_DIR/<name>).",
    )
    bucket = models.CharField(max_length=63, blank=True, default="")
    prefix = models.CharField(max_length=200, blank=True, default="", help_text="S3: key prefix inside the bucket.")
    endpoint_url = models.CharField(max_length=300, blank=True, default="", help_text="S3: empty for AWS.")
    region = models.CharField(max_length=32, blank=True, default="")
    access_key_file = models.CharField(max_length=300, blank=True, default="", help_text="S3: a file holding the key.")
    secret_key_file = models.CharField(max_length=300, blank=True, default="")
    storage_class = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="S3: STANDARD, STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE...",
    )
    retrieval = models.CharField(max_length=16, choices=Retrieval.choices, default=Retrieval.IMMEDIATE)
    cost_per_gb_month = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cost_per_gb_retrieved = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cost_per_1000_requests = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    from_environment = models.BooleanField(default=False, editable=False)
    description = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        registry.forget()

    def config(self) -> dict[str, str]:
        """The backend configuration, in the shape of a ``PACS_TIERS`` entry."""
        if self.backend == TierBackend.S3:
            names = [
                "bucket",
                "prefix",
                "endpoint_url",
                "region",
                "access_key_file",
                "secret_key_file",
                "storage_class",
            ]
        else:
            names = ["root"]
        return {"backend": self.backend} | {n: getattr(self, n) for n in names if getattr(self, n)}

    def clean(self) -> None:
        """A tier is saved only if its backend can be reached now (a folder that exists, a bucket that answers)."""
        if self.from_environment:
            return
        if self.backend == TierBackend.S3 and not self.bucket:
            raise ValidationError({"bucket": "An S3 tier needs a bucket."})
        if self.backend != TierBackend.S3 and self.root and not self.root.startswith("/"):
            raise ValidationError({"root": "Give an absolute path."})
        try:
            storage = registry.build(self.name, self.config())
            storage.check()
        except (OSError, ValueError) as exc:
            raise ValidationError(f"The tier cannot be reached: {exc}") from None
        if storage.archival and self.retrieval == Retrieval.IMMEDIATE:
            raise ValidationError(
                {"retrieval": f"{self.storage_class} objects need a restore before reads: choose minutes or hours."}
            )

    @property
    def immediate(self) -> bool:
        return self.retrieval == Retrieval.IMMEDIATE

    @classmethod
    def sync_environment(cls) -> None:
        """Rows for the built-in tiers and those ``PACS_TIERS`` names, mirroring their configuration (costs kept)."""
        names = dict(registry.BUILTIN) | dict(settings.PACS_TIERS)
        for name, config in names.items():
            location = {k: str(v) for k, v in config.items() if k in LOCATION_FIELDS}
            backend = config["backend"] if config["backend"] in TierBackend.values else TierBackend.FILESYSTEM
            tier, created = cls.objects.get_or_create(
                name=name, defaults={"backend": backend, "from_environment": True, **location}
            )
            if not created:
                changed = {"backend": backend, "from_environment": True} | {
                    f: location.get(f, "") for f in LOCATION_FIELDS
                }
                if any(getattr(tier, f) != v for f, v in changed.items()):
                    cls.objects.filter(pk=tier.pk).update(**changed)


LOCATION_FIELDS = (
    "root",
    "bucket",
    "prefix",
    "endpoint_url",
    "region",
    "access_key_file",
    "secret_key_file",
    "storage_class",
)


def _catalog(name: str) -> dict[str, str] | None:
    tier = Tier.objects.filter(name=name).first()
    return None if tier is None else tier.config()


registry.set_catalog(_catalog)


def validate_tier_name(name: str) -> None:
    """A rule or a move may name only a tier that exists (environment, built-in or admin)."""
    try:
        registry.tier_config(name)
    except registry.UnknownTier as exc:
        raise ValidationError(str(exc)) from None


def tier_retrieval(name: str) -> str:
    """How soon objects of the tier ``name`` can be read (a :class:`Retrieval` value).

    The tier's row says (or ``retrieval`` in its ``PACS_TIERS`` entry); a tier
    in an archive storage class (GLACIER, DEEP_ARCHIVE) needs a restore
    whatever they say: hours, as AWS's standard retrieval takes.
    """
    declared = (registry.environment_config(name) or {}).get("retrieval") or (
        Tier.objects.filter(name=name).values_list("retrieval", flat=True).first()
    )
    if declared in Retrieval.values and declared != Retrieval.IMMEDIATE:
        return str(declared)
    try:
        archival = get_storage(name).archival
    except (OSError, ValueError):
        archival = False
    return Retrieval.HOURS if archival else Retrieval.IMMEDIATE


def tier_availability(name: str) -> str:
    """(0008,0056) of an object on the tier ``name``.

    ONLINE when immediate, NEARLINE when a restore brings it back by itself,
    OFFLINE when its media need manual intervention (:attr:`Retrieval.MANUAL`).
    """
    retrieval = tier_retrieval(name)
    if retrieval == Retrieval.IMMEDIATE:
        return Availability.ONLINE
    return Availability.OFFLINE if retrieval == Retrieval.MANUAL else Availability.NEARLINE


class RuleBasis(models.TextChoices):
    """What a lifecycle rule's days count: age since receipt, idle time since the last read, or a recent read."""

    RECEIPT = "receipt", "at least N days since receipt"
    LAST_ACCESS = "last_access", "at least N days since the last access (since receipt if never accessed)"
    ACCESSED_WITHIN = "accessed_within", "accessed within the last N days (promote back to a faster tier)"


class LifecycleRule(models.Model):
    """Move instances to a tier when their study matches the filters (evaluated set-based in SQL).

    The days count from receipt (:attr:`Study.created_at`), from the last
    access (:attr:`Study.last_accessed_at`, recorded by every read path at
    most once an hour: :mod:`archive.ingest.lastaccess`; receipt when never
    read), or, for a rule that promotes back, select studies read within the
    last N days. The patient's age is taken at the study date (see
    :mod:`archive.ingest.lifecycle`); an unknown age matches no age bound.
    """

    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    priority = models.PositiveIntegerField(
        default=100, help_text="Lower first: when several rules match an instance, the first one decides."
    )
    basis = models.CharField(
        "when",
        max_length=16,
        choices=RuleBasis.choices,
        default=RuleBasis.RECEIPT,
        help_text=(
            "What the days count. Since receipt: the study's age in the archive. Since the last access: days "
            "since anyone last read the study (WADO-RS, the viewer, C-GET/C-MOVE, export), counted from receipt "
            "when it was never read. Accessed within: studies read in the last N days, to bring them back to a "
            "faster tier; a study on a tier that needs a restore comes back by the restore its read started."
        ),
    )
    after_days = models.PositiveIntegerField("days", help_text="N, the number of days the rule counts (see 'when').")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, help_text="Empty: every site.")
    modality = models.CharField(max_length=16, blank=True, default="", help_text="(0008,0060), e.g. CT. Empty: any.")
    body_part = models.CharField(max_length=64, blank=True, default="", help_text="(0018,0015), e.g. CHEST.")
    description_pattern = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="(0008,1030) Study Description contains this text (case-insensitive). Empty: any.",
    )
    min_patient_age = models.PositiveIntegerField(
        "patient age from",
        null=True,
        blank=True,
        validators=[MaxValueValidator(200)],
        help_text=(
            "Only patients at least this many years old at the study date, from (0010,0030) Patient's Birth Date "
            "and (0008,0020) Study Date, else (0010,1010) Patient's Age. A study whose age is unknown does not "
            "match. Empty: no lower bound."
        ),
    )
    max_patient_age = models.PositiveIntegerField(
        "patient age up to",
        null=True,
        blank=True,
        validators=[MaxValueValidator(200)],
        help_text="Only patients at most this many years old at the study date (e.g. 17: children). Empty: no bound.",
    )
    target_tier = models.CharField(max_length=32, help_text="The tier to move to (hot, cold, or one added here).")

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"{self.name} → {self.target_tier}"

    def clean(self) -> None:
        """The age bounds must make sense; the target tier must exist and be reachable now."""
        low, high = self.min_patient_age, self.max_patient_age
        if low is not None and high is not None and low > high:
            raise ValidationError({"max_patient_age": "The upper age bound is below the lower one."})
        if not self.target_tier:
            return
        try:
            get_storage(self.target_tier).check()
        except registry.UnknownTier as exc:
            raise ValidationError({"target_tier": str(exc)}) from None
        except (OSError, ValueError) as exc:
            raise ValidationError({"target_tier": f"The tier cannot be reached: {exc}"}) from None


class MoveState(models.TextChoices):
    """Where a move stands: each step is done once and recorded before the next begins."""

    PENDING = "pending"  # nothing copied yet
    COPIED = "copied"  # the destination holds a copy, not yet verified
    VERIFIED = "verified"  # the copy hashes to the instance's SHA-256
    SWITCHED = "switched"  # the index points to the copy; the source waits to be deleted
    DONE = "done"  # the source is gone
    FAILED = "failed"  # given up (said why); the index still points to the source


ACTIVE_MOVE_STATES = [MoveState.PENDING, MoveState.COPIED, MoveState.VERIFIED, MoveState.SWITCHED]


class TierMove(models.Model):
    """The mover's ledger: one row per object moved, recording each finished step (archive/ingest/mover.py)."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="moves")
    batch = models.CharField(
        max_length=32, db_index=True, help_text="Moves asked for together (a command, a rule run)."
    )
    source_tier = models.CharField(max_length=32)
    source_key = models.CharField(max_length=300)
    target_tier = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=MoveState.choices, default=MoveState.PENDING)
    size = models.BigIntegerField(default=0)
    stored_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes taken on the target tier.")
    attempts = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True, help_text="A worker holds the move until then.")
    worker = models.CharField(max_length=32, blank=True, default="", help_text="Which worker holds the lease.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    switched_at = models.DateTimeField(null=True, blank=True)
    keep_source = models.BooleanField(
        default=False, help_text="Leave the source in place after the switch (a restore keeps the archive copy)."
    )

    class Meta:
        constraints = [
            # An instance moves once at a time, so no two moves can disagree about where it is.
            models.UniqueConstraint(
                fields=["instance"], condition=models.Q(state__in=ACTIVE_MOVE_STATES), name="one_active_move"
            )
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="tiermove_state")]

    def __str__(self) -> str:
        return f"{self.source_tier} → {self.target_tier} ({self.state})"


class Budget(models.Model):
    """A monthly storage budget for a site, the sites of a cost tag, or the whole archive (archive/costs/).

    When the projected monthly cost ``horizon_months`` from now crosses
    ``monthly_limit`` the budget alerts once: a record in the audit trail
    (``budget-alert``), a line in the cost page and, if ``notify`` names
    addresses, an e-mail. ``alerted_at`` keeps the crossing, so it is not
    alerted again until the projection falls back under the limit.
    """

    name = models.CharField(max_length=100)
    site = models.ForeignKey(
        Site, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets", help_text="Empty: see cost tag."
    )
    cost_tag = models.SlugField(
        max_length=32, blank=True, default="", help_text="Every site with this cost tag. Empty with no site: all."
    )
    monthly_limit = models.DecimalField(max_digits=14, decimal_places=2, validators=[MinValueValidator(0)])
    horizon_months = models.PositiveIntegerField(
        default=12,
        validators=[MinValueValidator(0), MaxValueValidator(60)],
        help_text="Alert when the monthly cost projected this many months ahead (0: now) crosses the limit.",
    )
    notify = models.TextField(blank=True, default="", help_text="E-mail addresses to alert, one per line.")
    enabled = models.BooleanField(default=True)
    alerted_at = models.DateTimeField(null=True, blank=True, editable=False)
    alerted_cost = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.site_id is not None and self.cost_tag:
            raise ValidationError("A budget covers a site or a cost tag, not both.")
        for address in self.recipients():
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"notify": f"Not an e-mail address: {address!r}"}) from None

    def recipients(self) -> list[str]:
        return [a.strip() for a in self.notify.splitlines() if a.strip()]

    @property
    def scope(self) -> str:
        if self.site_id is not None:
            return f"site {self.site.code if self.site else self.site_id}"
        return f"cost tag {self.cost_tag}" if self.cost_tag else "the whole archive"


# --- Retention, legal holds and the trash (archive/ingest/retention.py, archive/ingest/trash.py) ---------------


class RetentionBasis(models.TextChoices):
    """What a retention period counts from."""

    STUDY_DATE = "study_date", "the study date"
    RECEIPT = "receipt", "receipt by the archive"
    PATIENT_LIFE = "patient_life", "the patient's death (life of the patient plus the period)"


class RetentionPolicy(models.Model):
    """Keep studies at least ``years`` from a basis; of all the policies that apply to a study, the longest wins.

    A policy applies to a study of its site (empty: every site) holding a
    series of its modality (empty: any). Unknown dates never shorten a
    retention: see :func:`archive.ingest.retention.keep_until`.
    """

    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, help_text="Empty: every site.")
    modality = models.CharField(max_length=16, blank=True, default="", help_text="(0008,0060), e.g. MG. Empty: any.")
    basis = models.CharField(max_length=16, choices=RetentionBasis.choices, default=RetentionBasis.STUDY_DATE)
    years = models.PositiveIntegerField(
        validators=[MaxValueValidator(200)], help_text="Years kept at least, counted from the basis."
    )
    description = models.CharField(max_length=200, blank=True, default="", help_text="E.g. the statute it follows.")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "retention policies"

    def __str__(self) -> str:
        return f"{self.name}: {self.years} years from {self.get_basis_display()}"


class PatientDeath(models.Model):
    """A patient's date of death, recorded by an administrator (not in DICOM), for life-of-patient retention."""

    patient_id = models.CharField(max_length=64)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True, default="")
    death_date = models.DateField()
    source = models.CharField(max_length=200, help_text="Where the date comes from (e.g. the EHR, a certificate).")
    recorded_by = models.CharField(max_length=150, editable=False, default="")
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient_id", "issuer_of_patient_id"], name="one_death_per_patient")
        ]

    def __str__(self) -> str:
        return f"{self.patient_id}: {self.death_date}"


class LegalHold(models.Model):
    """A hold on a patient (every study of theirs) or on one study: nothing under it is deleted, by any path.

    Held by identifiers, not by foreign keys, so a hold outlives index rows
    (``reindex --wipe``) and may be placed before a study arrives. Released,
    never deleted, by an administrator who says why.
    """

    patient_id = models.CharField(
        max_length=64, blank=True, default="", help_text="(0010,0020) Patient ID: every study of the patient."
    )
    issuer_of_patient_id = models.CharField(max_length=64, blank=True, default="")
    study_instance_uid = models.CharField(
        max_length=64, blank=True, default="", help_text="(0020,000D) Study Instance UID: this study only."
    )
    reason = models.TextField(help_text="Why (the matter, the request).")
    placed_by = models.CharField(max_length=150, editable=False, default="")
    placed_at = models.DateTimeField(default=timezone.now, editable=False)
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    release_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-placed_at"]
        indexes = [
            models.Index(fields=["study_instance_uid"], name="hold_study"),
            models.Index(fields=["patient_id", "issuer_of_patient_id"], name="hold_patient"),
        ]

    def __str__(self) -> str:
        what = f"study {self.study_instance_uid}" if self.study_instance_uid else f"patient {self.patient_id}"
        return f"hold on {what}" + (" (released)" if self.released_at else "")

    def clean(self) -> None:
        if bool(self.patient_id) == bool(self.study_instance_uid):
            raise ValidationError("Hold either a patient (Patient ID) or a study (Study Instance UID), not both.")
        if self.study_instance_uid and not is_valid_uid(self.study_instance_uid):
            raise ValidationError({"study_instance_uid": "Not a valid UID (PS3.5 9.1)."})
        if not self.reason.strip():
            raise ValidationError({"reason": "Say why the hold is placed."})


class TrashEntry(models.Model):
    """A study or a series in the trash: who put it there, why, and when it may be purged.

    Keyed by the Study Instance UID (no foreign key), so the entry outlives a
    ``reindex --wipe``, which puts the study back in the trash. A series in
    the trash sits under a study row of its own, in the trash, whose UID the
    entry is keyed by (archive/ingest/trash.py): ``series_instance_uid`` and
    ``original_study_uid`` say which series of which study it is.
    """

    study_instance_uid = models.CharField(max_length=64, unique=True)
    series_instance_uid = models.CharField(
        max_length=64, blank=True, default="", db_index=True, help_text="A series in the trash (empty: a study)."
    )
    original_study_uid = models.CharField(
        max_length=64, blank=True, default="", help_text="The study the series in the trash belongs to."
    )
    saved = models.JSONField(
        default=dict, blank=True, editable=False, help_text="What a restore puts back (the study's counts)."
    )
    patient_id = models.CharField(max_length=64, blank=True, default="")
    trashed_at = models.DateTimeField(default=timezone.now)
    trashed_by = models.CharField(max_length=150, default="")
    reason = models.CharField(max_length=500, blank=True, default="")
    purge_after = models.DateTimeField(db_index=True)
    instances = models.PositiveIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    purging_at = models.DateTimeField(
        null=True, blank=True, help_text="A purge has begun: objects may be gone, so it can no longer be restored."
    )

    class Meta:
        ordering = ["trashed_at"]
        verbose_name_plural = "trash"

    def __str__(self) -> str:
        if self.series_instance_uid:
            return f"series {self.series_instance_uid} of {self.original_study_uid}"
        return self.study_instance_uid


class RestoreState(models.TextChoices):
    """Where a restore stands (archive/ingest/restore.py); each step is recorded once done."""

    REQUESTED = "requested"  # asked for; the tier has not been asked yet
    RESTORING = "restoring"  # the tier makes a temporary readable copy (RestoreObject sent)
    COPYING = "copying"  # the copy is readable: the mover brings the object to an immediate tier
    DONE = "done"  # the index points to an immediate tier
    FAILED = "failed"  # given up (said why); the object stays where it was


ACTIVE_RESTORE_STATES = [RestoreState.REQUESTED, RestoreState.RESTORING, RestoreState.COPYING]


class Restore(models.Model):
    """One object brought back from a tier that needs a restore: at most one in flight per instance."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="restores")
    source_tier = models.CharField(max_length=32)
    target_tier = models.CharField(max_length=32, help_text="The immediate tier the object is copied back to.")
    state = models.CharField(max_length=16, choices=RestoreState.choices, default=RestoreState.REQUESTED)
    reason = models.CharField(max_length=16, help_text="What asked for it: a read, a command, a new study's priors.")
    batch = models.CharField(max_length=32, blank=True, default="", help_text="The mover's batch copying it back.")
    attempts = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True, default="")
    requested_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True, help_text="When the tier's temporary copy was readable.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When the tier's temporary copy goes away.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One restore in flight per object, however many reads ask for it.
            models.UniqueConstraint(
                fields=["instance"], condition=models.Q(state__in=ACTIVE_RESTORE_STATES), name="one_active_restore"
            )
        ]
        indexes = [
            models.Index(fields=["state", "requested_at"], name="restore_state"),
            # A tier's last restores, for the learned estimate of every 503 (archive/ingest/restore.py).
            models.Index(fields=["source_tier", "state", "done_at"], name="restore_history"),
        ]

    def __str__(self) -> str:
        return f"{self.source_tier} → {self.target_tier} ({self.state})"


class InstanceVersion(models.Model):
    """An earlier version of an instance: the object a correction replaced, kept as it was.

    A correction (:mod:`archive.ingest.correct`) stores a corrected copy under
    the same SOP Instance UID and switches the :class:`Instance` row to it;
    the replaced object stays where it was, named here. Only administrators
    retrieve it (Django admin). It goes only with its study (a purge or a
    deletion, behind the retention guard), never on its own.
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField(help_text="1: the instance as first stored; each correction adds one.")
    sop_instance_uid = models.CharField(max_length=64, db_index=True)
    tier = models.CharField(max_length=32)
    storage_key = models.CharField(max_length=300)
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    replaced_at = models.DateTimeField(default=timezone.now)
    replaced_by = models.CharField(max_length=150, help_text="Who made the correction that replaced it.")
    reason = models.TextField(help_text="Why the correction was made.")
    correction = models.CharField(max_length=32, db_index=True, help_text="The correction that replaced it.")

    class Meta:
        ordering = ["instance_id", "version"]
        constraints = [models.UniqueConstraint(fields=["instance", "version"], name="unique_instance_version")]

    def __str__(self) -> str:
        return f"{self.sop_instance_uid} v{self.version}"

    def open_stored(self) -> BinaryIO:
        """The earlier object's Part 10 bytes, open for reading."""
        return get_storage(self.tier).open(self.storage_key)

"""What the integrations keep: registered EHRs, the launches they asked for, the assertions they used.

* :class:`EhrIntegration` is one EHR allowed to launch the viewer: how it
  authenticates (a client secret, kept only as its SHA-256, or a public key for
  RFC 7523 signed assertions), which sites it may open, where its users may be
  sent back to, and how long its launch tokens live.
* :class:`EhrIdentity` binds an account to one clinician of one EHR, so a
  clinician's second launch reuses the account the first one made, and an EHR
  can never reach another account (not even by naming its e-mail address).
* :class:`EhrLaunch` is one launch: the SHA-256 of its one-time token (never the
  token), what it is bound to (clinician, patient, studies), its expiry and,
  once used, when, by which account and under which session scope.
* The ``smart_*`` fields of :class:`EhrIntegration` describe the same EHR as a
  SMART on FHIR authorization server: its FHIR base (the ``iss`` of its
  launches, where ``.well-known/smart-configuration`` is), this archive's
  client at it, how its access tokens are checked (introspection or JWKS) and
  the audience they must carry. :class:`SmartPatient` remembers which of our
  patients an EHR's FHIR Patient id is.
* :class:`UsedAssertion` remembers the ``jti`` of every client assertion until
  it expires: an assertion is accepted once.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from archive.models import Site

CLIENT_ID = RegexValidator(r"^[A-Za-z0-9._-]{1,64}\Z", "Letters, digits, '.', '_' and '-' only (at most 64).")


class AuthMethod(models.TextChoices):
    """How the EHR authenticates its launch requests (the OAuth client authentication method names)."""

    CLIENT_SECRET_BASIC = "client_secret_basic", "Client secret (HTTP Basic)"
    PRIVATE_KEY_JWT = "private_key_jwt", "Signed assertion (RFC 7523 private_key_jwt)"


class EhrIntegration(models.Model):
    """An EHR allowed to ask for launch URLs."""

    name = models.CharField(max_length=200, unique=True)
    client_id = models.CharField(max_length=64, unique=True, validators=[CLIENT_ID])
    auth_method = models.CharField(max_length=32, choices=AuthMethod.choices, default=AuthMethod.CLIENT_SECRET_BASIC)
    secret_sha256 = models.CharField(max_length=64, blank=True, default="", editable=False)
    jwks_url = models.URLField(
        blank=True, default="", help_text="For signed assertions: where the EHR publishes its keys (JWKS)."
    )
    public_key_pem = models.TextField(
        blank=True, default="", help_text="For signed assertions, instead of a JWKS URL: the EHR's public key (PEM)."
    )
    sites = models.ManyToManyField(
        Site, related_name="ehr_integrations", help_text="The sites whose studies this EHR may open."
    )
    return_origins = models.TextField(
        blank=True,
        default="",
        help_text="Origins (https://ehr.example.org) a launch may name as the page to return to, one per line.",
    )
    token_lifetime_seconds = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(10), MaxValueValidator(600)],
        help_text="How long a launch URL may wait to be opened (10 s to 10 min; default 2 min).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    smart_fhir_base = models.URLField(
        blank=True,
        default="",
        max_length=500,
        help_text="SMART: the EHR's FHIR base URL (the iss of its launches); its .well-known/smart-configuration "
        "names the authorization server.",
    )
    smart_client_id = models.CharField(
        max_length=200, blank=True, default="", help_text="SMART: this archive's client id at the EHR."
    )
    smart_client_secret = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="SMART: this archive's client secret at the EHR (sent to the EHR's token and introspection "
        "endpoints, so kept as given; revoke it at the EHR if it leaks).",
    )
    smart_scope = models.CharField(
        max_length=500,
        blank=True,
        default="launch patient/Patient.read",
        help_text="SMART App Launch: the scopes this archive asks for (it reads the launch's Patient; empty: "
        "launch patient/Patient.read).",
    )
    smart_patient_system = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="SMART: the identifier system (urn:oid:… or a URL) of the EHR's Patient identifiers that are our "
        "(0010,0020) Patient IDs.",
    )
    smart_patient_issuer = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="SMART: our (0010,0021) Issuer of Patient ID of the EHR's patients, matched exactly (empty: only "
        "patients without an issuer).",
    )
    smart_audience = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="SMART Imaging Access: the audience (aud) the EHR's access tokens for this archive carry. "
        "Empty: this EHR's access tokens are not accepted.",
    )
    smart_token_check = models.CharField(
        max_length=16,
        choices=[("introspection", "Token introspection (RFC 7662)"), ("jwks", "JWT signature (the EHR's JWKS)")],
        default="introspection",
        blank=True,
        help_text="SMART Imaging Access: how access tokens are checked (empty: introspection).",
    )

    class Meta:
        verbose_name = "EHR integration"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def origins(self) -> list[str]:
        return [line.strip().rstrip("/") for line in self.return_origins.splitlines() if line.strip()]

    def clean(self) -> None:
        from integrations.keys import KeyProblem, load_public_key

        bad = [o for o in self.origins if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", o)]
        if bad:
            raise ValidationError({"return_origins": f"Not an origin (scheme://host[:port]): {bad[0]}"})
        if self.smart_fhir_base and not re.match(r"https?://", self.smart_fhir_base):
            raise ValidationError({"smart_fhir_base": "The FHIR base is an http(s) URL."})
        if self.smart_audience and not (self.smart_fhir_base and self.smart_client_id):
            raise ValidationError({"smart_audience": "Accepting SMART tokens needs the FHIR base and client id too."})
        if self.auth_method == AuthMethod.PRIVATE_KEY_JWT:
            if bool(self.jwks_url) == bool(self.public_key_pem.strip()):
                raise ValidationError("A signed-assertion integration needs a JWKS URL or a public key, not both.")
            if self.public_key_pem.strip():
                try:
                    load_public_key(self.public_key_pem)
                except KeyProblem as exc:
                    raise ValidationError({"public_key_pem": str(exc)}) from None


class EhrIdentity(models.Model):
    """The account of one clinician of one EHR (the EHR's own identifier of the clinician)."""

    integration = models.ForeignKey(EhrIntegration, on_delete=models.CASCADE, related_name="identities")
    clinician_id = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ehr_identities")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_launch_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "EHR identity"
        verbose_name_plural = "EHR identities"
        constraints = [models.UniqueConstraint(fields=["integration", "clinician_id"], name="unique_ehr_clinician")]

    def __str__(self) -> str:
        return f"{self.user} = {self.clinician_id} @ {self.integration}"


class EhrLaunch(models.Model):
    """One launch an EHR asked for; its token is known only by its SHA-256."""

    integration = models.ForeignKey(EhrIntegration, on_delete=models.CASCADE, related_name="launches")
    token_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(editable=False)
    expires_at = models.DateTimeField(editable=False)
    consumed_at = models.DateTimeField(null=True, blank=True, editable=False)
    clinician_id = models.CharField(max_length=64)
    clinician_name = models.CharField(max_length=200)
    clinician_email = models.CharField(max_length=254, blank=True, default="")
    clinician_role = models.CharField(max_length=64, blank=True, default="")
    patient_id = models.CharField(max_length=64)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True, default="")
    study_instance_uids = models.JSONField(default=list)
    accession_numbers = models.JSONField(default=list)
    return_url = models.CharField(max_length=2000, blank=True, default="")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, editable=False, related_name="+"
    )
    scope = models.CharField(max_length=64, blank=True, default="", editable=False)
    access_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "EHR launch"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["expires_at"], name="ehr_launch_expiry")]

    def __str__(self) -> str:
        return f"launch {self.pk} by {self.integration} for {self.clinician_id}"


class SmartPatient(models.Model):
    """One EHR's FHIR Patient id and our patient: learnt from the EHR's Patient resource, by identifier."""

    integration = models.ForeignKey(EhrIntegration, on_delete=models.CASCADE, related_name="+")
    fhir_id = models.CharField(max_length=64)
    patient = models.ForeignKey("archive.Patient", on_delete=models.CASCADE, related_name="+")
    learnt_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["integration", "fhir_id"], name="unique_smart_patient")]

    def __str__(self) -> str:
        return f"{self.fhir_id} @ {self.integration}"


class UsedAssertion(models.Model):
    """A client assertion's ``jti``, kept until the assertion expires: the replay guard."""

    integration = models.ForeignKey(EhrIntegration, on_delete=models.CASCADE, related_name="+")
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["integration", "jti"], name="unique_assertion_jti")]

    def __str__(self) -> str:
        return f"{self.jti} of {self.integration}"

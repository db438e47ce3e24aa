"""Who belongs where and who was given what: the data behind the access policy.

* :class:`SiteMembership` ties a user to a hospital (``archive.Site``); site
  readers see the studies of their sites.
* :class:`AccessGrant` is an explicit, always expiring exception: a consultant
  reading for another hospital (a whole site) or a referring clinician given
  one study (by hand, or by an EHR launch). Expired grants stop working
  at the next request because the policy compares ``expires_at`` with now.
  A grant with a ``scope`` belongs to one browser session (an EHR launch):
  that session sees only its scope's grants, and no other session or token
  sees them (``portal/access.py``).
* :class:`UserProfile` holds what Django's user lacks: the user's DICOM person
  name (matched against (0008,0090) Referring Physician's Name) and the session
  generation that "sign out everywhere" increments.
* :class:`SignInFailure` rows count failed sign-ins per user name and address
  for the lockout (``portal/accounts/lockout.py``).
* :class:`OIDCIdentity` binds an account to one identity at an OpenID
  provider, (issuer, subject): the only key SSO sign-ins are matched by once
  linked (``portal/sso/oidc.py``).
* :class:`PasswordResetRequest` rows count reset requests per address and per
  client address for the reset throttle (``portal/accounts/resetlimit.py``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from archive.models import Site, Study


class SiteMembership(models.Model):
    """A user works at a site."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="site_memberships")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "site"], name="unique_site_membership")]
        ordering = ["site__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.site.code}"


class AccessGrantQuerySet(models.QuerySet["AccessGrant"]):
    def active(self) -> AccessGrantQuerySet:
        return self.filter(expires_at__gt=timezone.now())


class AccessGrant(models.Model):
    """Access to one site or one study, for one user, until ``expires_at``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_grants")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="grants")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, null=True, blank=True, related_name="grants")
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=500, help_text="Why this access is needed (kept in the audit trail).")
    scope = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_index=True,
        help_text="Empty for an ordinary grant. Otherwise the grant serves only the one session limited to this "
        "scope (an EHR launch), and that session sees nothing else.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(help_text="The grant stops working at this moment.")

    objects = AccessGrantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(site__isnull=False, study__isnull=True) | Q(site__isnull=True, study__isnull=False)),
                name="grant_names_site_xor_study",
            )
        ]
        indexes = [models.Index(fields=["user", "expires_at"], name="grant_user_expiry")]
        ordering = ["-expires_at"]

    def __str__(self) -> str:
        target = f"site {self.site.code}" if self.site_id and self.site else f"study {self.study}"
        return f"{self.user}: {target} until {self.expires_at:%Y-%m-%d %H:%M}"

    @property
    def is_active(self) -> bool:
        return self.expires_at > timezone.now()


class UserProfile(models.Model):
    """Per-user settings the access policy and the session checks need."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pacs_profile")
    dicom_person_name = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="The user's name as modalities write it in (0008,0090) Referring Physician's Name, "
        "e.g. SMITH^JOHN. Referring clinicians see the studies that name them.",
    )
    session_generation = models.PositiveIntegerField(
        default=0, editable=False, help_text="Raised by 'sign out everywhere'; older sessions stop working."
    )

    def __str__(self) -> str:
        return f"profile of {self.user}"

    @classmethod
    def of(cls, user: Any) -> UserProfile:
        profile, _ = cls.objects.get_or_create(user=user)
        return profile


class Attempt(models.Model):
    """Something a client tried, from where and when: what the sign-in and reset throttles count."""

    source_ip = models.CharField(max_length=64, blank=True, default="", db_index=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        abstract = True
        ordering = ["-at"]


class SignInFailure(Attempt):
    """One failed password sign-in (user name as typed, lower-cased)."""

    username = models.CharField(max_length=150, db_index=True)

    def __str__(self) -> str:
        return f"{self.username} from {self.source_ip or '?'} at {self.at:%Y-%m-%d %H:%M:%S}"


class OIDCIdentity(models.Model):
    """An account's identity at an OpenID provider: the ID token's ``iss`` and ``sub``.

    ``sub`` is the provider's stable, never reassigned key for a person; e-mail
    addresses change and can be reused, so they are used at most once, to link
    an existing account on its first SSO sign-in (``OIDC_LINK_BY_EMAIL``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    email_at_link = models.CharField(max_length=254, blank=True, default="", editable=False)
    linked_by = models.CharField(
        max_length=16, editable=False, choices=[("created", "account created"), ("email", "verified e-mail")]
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "OIDC identity"
        verbose_name_plural = "OIDC identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="unique_oidc_identity"),
            models.UniqueConstraint(fields=["user", "issuer"], name="one_oidc_identity_per_issuer"),
        ]
        ordering = ["issuer", "subject"]

    def __str__(self) -> str:
        return f"{self.user} = {self.subject} @ {self.issuer}"


class PasswordResetRequest(Attempt):
    """One password-reset request (address lower-cased), whether or not an account has it."""

    email = models.CharField(max_length=254, db_index=True)

    def __str__(self) -> str:
        return f"reset for {self.email} from {self.source_ip or '?'} at {self.at:%Y-%m-%d %H:%M:%S}"

"""Django settings, read from the environment.

One file for every deployment. Three small helpers read environment values and
fail loudly on a bad one. The embedded default is SQLite (WAL) plus a local data
folder (``PACS_DATA_DIR``, ``./var``); ``DATABASE_URL`` switches the index to
PostgreSQL. No secret lives in the repository: ``SECRET_KEY`` comes from the
environment (or ``SECRET_KEY_FILE``), and when neither is set a random key is
generated once into the data folder.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """A boolean from the environment: 1/0, true/false, yes/no, on/off."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean, not {raw!r}")


def env_int(name: str, default: int) -> int:
    """An integer from the environment."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


def env_secret(name: str, default: str = "") -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


DATA_DIR = Path(os.environ.get("PACS_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if key:
        return key
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tasks",
    "django_tasks_db",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "mozilla_django_oidc",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files (the CSP allows no CDN)
    "audit",
    "archive",
    "portal",
    "portal.worklist",
    "portal.reports",
    "viewer",
    "integrations",
    "migration",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "pacs.middleware.DicomWebCorsMiddleware",  # off unless PACS_CORS_ORIGINS; bearer tokens only
    "pacs.middleware.JsonGZipMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # serves collected static files from the app server
    "pacs.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.accounts.middleware.SessionPolicyMiddleware",  # idle/absolute timeout, sign out everywhere
    "django_otp.middleware.OTPMiddleware",
    "portal.mfa.middleware.MFAEnforcementMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pacs.urls"
WSGI_APPLICATION = "pacs.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# One switch for "acknowledged means durable through a power cut": objects, their directories and, on SQLite,
# every commit (synchronous=FULL; writers under pacs.lib.dblock.write_lock share WAL syncs). Off only for tests.
PACS_FSYNC = env_bool("PACS_FSYNC", True)
_db_url = os.environ.get("DATABASE_URL", "")
if _db_url:
    DATABASES = {"default": dj_database_url.parse(_db_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("TEST_DATABASE_NAME") or None
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "pacs.sqlite3"),
            "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 600),
            # Tests use a file too: concurrent requests of live-server tests then queue
            # on WAL locks as in production instead of failing on shared-cache locks.
            "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; "
                    f"PRAGMA synchronous={'FULL' if PACS_FSYNC else 'NORMAL'};"
                ),
                "transaction_mode": "IMMEDIATE",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Second factor (django-otp): TOTP apps plus single-use backup codes. Wrong codes
# back off exponentially per device (1 s, 2 s, 4 s ...); keep throttling on.
OTP_TOTP_ISSUER = os.environ.get("PACS_MFA_ISSUER", "Cloud PACS")
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # the admin never shows TOTP keys or backup codes
# An IdP sign-in whose ID token `amr` says mfa/otp/hwk counts as the second factor.
PACS_MFA_TRUST_IDP_AMR = env_bool("PACS_MFA_TRUST_IDP_AMR", True)

# Single sign-on (OpenID Connect, mozilla-django-oidc): on when a client id and an
# issuer (discovery) or explicit endpoints are set. See portal/sso/oidc.py.
OIDC_OP_ISSUER = os.environ.get("OIDC_OP_ISSUER", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env_secret("OIDC_RP_CLIENT_SECRET")
OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = os.environ.get("OIDC_RP_SCOPES", "openid email profile")
OIDC_CREATE_USER = env_bool("OIDC_CREATE_USERS", False)
# Accounts are bound to the provider's (iss, sub). An identity seen for the first
# time is linked to the account with the same address only when this is true and
# the provider says email_verified: true (portal/sso/oidc.py).
OIDC_LINK_BY_EMAIL = env_bool("OIDC_LINK_BY_EMAIL", False)
OIDC_ROLES_CLAIM = os.environ.get("OIDC_ROLES_CLAIM", "groups")
OIDC_ROLES_MAP = dict(  # "idp-group=role,other=role"
    pair.split("=", 1) for pair in os.environ.get("OIDC_ROLES_MAP", "").split(",") if "=" in pair
)
OIDC_SITES_CLAIM = os.environ.get("OIDC_SITES_CLAIM", "")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_SECONDS", 10)
OIDC_VERIFY_SSL = env_bool("OIDC_VERIFY_SSL", True)
OIDC_AUTHENTICATE_CLASS = "portal.sso.oidc.AuthenticateView"
OIDC_CALLBACK_CLASS = "portal.sso.oidc.CallbackView"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
# Sign-out also ends the provider's session (RP-initiated logout) when it has an
# end_session_endpoint (discovered, or OIDC_OP_LOGOUT_ENDPOINT); the ID token is
# kept in the server-side session as the id_token_hint.
OIDC_OP_LOGOUT_ENDPOINT = os.environ.get("OIDC_OP_LOGOUT_ENDPOINT", "")
OIDC_OP_LOGOUT_URL_METHOD = "portal.sso.oidc.provider_logout_url"
OIDC_STORE_ID_TOKEN = True
# Passwords go through Django's ModelBackend with the sign-in lockout (portal/accounts/lockout.py).
AUTHENTICATION_BACKENDS = ["portal.accounts.backends.LockoutModelBackend", "portal.sso.oidc.Backend"]

# Web hardening. Cookies are Secure unless explicitly served over plain HTTP
# on loopback (the demo): browsers treat 127.0.0.1 as a secure context anyway.
SECURE_COOKIES = env_bool("PACS_SECURE_COOKIES", True)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("PACS_SESSION_ABSOLUTE_SECONDS", 12 * 3600)
# Clinical workstations: a session idle this long ends (portal/accounts/sessions.py).
PACS_SESSION_IDLE_SECONDS = env_int("PACS_SESSION_IDLE_SECONDS", 15 * 60)
# Sign-in lockout: failures per user name / per address within the window lock it.
PACS_SIGNIN_MAX_FAILURES = env_int("PACS_SIGNIN_MAX_FAILURES", 5)
PACS_SIGNIN_MAX_FAILURES_PER_IP = env_int("PACS_SIGNIN_MAX_FAILURES_PER_IP", 20)
PACS_SIGNIN_LOCKOUT_SECONDS = env_int("PACS_SIGNIN_LOCKOUT_SECONDS", 15 * 60)
# Password-reset mail: written to files under the data folder unless an SMTP
# backend is configured (EMAIL_BACKEND, EMAIL_HOST, ...).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = Path(os.environ.get("EMAIL_FILE_PATH", DATA_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "pacs@localhost")
PASSWORD_RESET_TIMEOUT = env_int("PACS_PASSWORD_RESET_SECONDS", 3600)
# Reset mail per address / per client address within the window (portal/accounts/resetlimit.py).
PACS_PASSWORD_RESET_MAX_PER_EMAIL = env_int("PACS_PASSWORD_RESET_MAX_PER_EMAIL", 3)
PACS_PASSWORD_RESET_MAX_PER_IP = env_int("PACS_PASSWORD_RESET_MAX_PER_IP", 10)
PACS_PASSWORD_RESET_WINDOW_SECONDS = env_int("PACS_PASSWORD_RESET_WINDOW_SECONDS", 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"  # "no-referrer" makes Chromium send `Origin: null` on form POSTs, failing CSRF
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = env_int("PACS_HSTS_SECONDS", 0)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("PACS_BEHIND_TLS_PROXY", False) else None

# Archive
PACS_STORAGE_DIR = Path(os.environ.get("PACS_STORAGE_DIR", DATA_DIR / "objects")).resolve()
# Sites, roles and grants decide who sees which study (portal/access.py).
PACS_ACCESS_POLICY = os.environ.get("PACS_ACCESS_POLICY", "portal.access.SitePolicy")
#: Bearer tokens other than the archive's API tokens (archive.bearer): SMART access tokens of registered EHRs.
PACS_BEARER_VALIDATORS = ["integrations.smart.tokens.SmartTokenValidator"]
#: How long an EHR's SMART configuration and a checked SMART access token are remembered (seconds).
#: What the FHIR CapabilityStatement says about security beyond bearer tokens: SMART's authorization server.
PACS_FHIR_SECURITY = "integrations.smart.discovery.fhir_security"
PACS_SMART_DISCOVERY_SECONDS = env_int("PACS_SMART_DISCOVERY_SECONDS", 300)
PACS_SMART_TOKEN_CACHE_SECONDS = env_int("PACS_SMART_TOKEN_CACHE_SECONDS", 60)
PACS_STOW_MAX_BYTES = env_int("PACS_STOW_MAX_BYTES", 8 * 1024**3)
# Largest data set a deflated object (1.2.840.10008.1.2.1.99) may inflate to at ingest (archive/dicom/part10.py).
PACS_INFLATE_MAX_BYTES = env_int("PACS_INFLATE_MAX_BYTES", 512 * 1024**2)
#: Days a deleted study stays in the trash (hidden, restorable) before a purge removes it.
PACS_TRASH_DAYS = env_int("PACS_TRASH_DAYS", 30)
PACS_QIDO_DEFAULT_LIMIT = env_int("PACS_QIDO_DEFAULT_LIMIT", 1000)
# Origins (scheme://host:port, comma-separated) whose pages may call DICOMweb with a bearer token (OHIF).
PACS_CORS_ORIGINS = [o.strip().rstrip("/") for o in os.environ.get("PACS_CORS_ORIGINS", "").split(",") if o.strip()]
#: Answer single-frame reads of bearer clients outside the Django request cycle (archive/dicomweb/fastpath.py).
PACS_FAST_PATH = env_bool("PACS_FAST_PATH", True)
PACS_QIDO_MAX_LIMIT = env_int("PACS_QIDO_MAX_LIMIT", 10000)
# Storage tiers (archive/storage/registry.py), JSON: {"hot": {"backend": "filesystem", "root": "/existing/dir"},
# "warm": {"backend": "s3", "bucket": "pacs-warm", "endpoint_url": "http://127.0.0.1:8333", "region": "us-east-1",
# "prefix": "", "storage_class": "STANDARD_IA", "access_key_file": "/run/secrets/s3_key", "secret_key_file":
# "/run/secrets/s3_secret"}, "cold": {"backend": "zstd", "level": 1}}. Without key files boto3 reads
# AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY. Built in: "hot" (files) and "cold" (zstd) under PACS_STORAGE_DIR;
# more tiers are added in admin. A name no tier has is refused.
PACS_TIERS: dict[str, dict[str, str]] = json.loads(os.environ.get("PACS_TIERS") or "{}")
for _tier, _config in PACS_TIERS.items():
    if not isinstance(_config, dict) or not isinstance(_config.get("backend"), str):
        raise ValueError(f"PACS_TIERS[{_tier!r}] needs a backend: 'filesystem', 's3' or a dotted path")
    if _config["backend"] == "s3" and not _config.get("bucket"):
        raise ValueError(f"PACS_TIERS[{_tier!r}] needs a bucket")
# The tier mover (archive/ingest/mover.py): copy throughput per worker process (0: unlimited), moves at a
# time, objects per step, how long a moved object's source stays for reads under way, how long a worker holds a move.
PACS_TIER_MOVE_BYTES_PER_SECOND = env_int("PACS_TIER_MOVE_BYTES_PER_SECOND", 200 * 1024**2)
PACS_TIER_MOVE_CONCURRENCY = env_int("PACS_TIER_MOVE_CONCURRENCY", 2)
PACS_TIER_MOVE_GROUP = env_int("PACS_TIER_MOVE_GROUP", 64)  # moves taken through each step in one transaction
PACS_TIER_MOVE_GRACE_SECONDS = env_int("PACS_TIER_MOVE_GRACE_SECONDS", 60)
PACS_TIER_MOVE_LEASE_SECONDS = env_int("PACS_TIER_MOVE_LEASE_SECONDS", 300)
# The storage cost page (archive/costs/): the trailing window the ingest rate is measured over, and the share
# of the data held that is assumed to be read back once a year (reads are not recorded yet).
PACS_COST_WINDOW_DAYS = env_int("PACS_COST_WINDOW_DAYS", 90)
PACS_COST_READ_SHARE = float(os.environ.get("PACS_COST_READ_SHARE", "0"))
# Restores from tiers that need one (S3 GLACIER, DEEP_ARCHIVE): where objects come back to, how long the
# tier keeps its temporary copy, how often the worker polls, whether the archive copy stays after the copy back.
PACS_RESTORE_TIER = os.environ.get("PACS_RESTORE_TIER", "hot")
PACS_RESTORE_DAYS = env_int("PACS_RESTORE_DAYS", 2)
PACS_RESTORE_POLL_SECONDS = env_int("PACS_RESTORE_POLL_SECONDS", 60)
PACS_RESTORE_KEEP_SOURCE = env_bool("PACS_RESTORE_KEEP_SOURCE", True)
# Study.last_accessed_at is written at most once per study and process this often (0: not recorded).
PACS_LAST_ACCESS_INTERVAL_SECONDS = env_int("PACS_LAST_ACCESS_INTERVAL_SECONDS", 3600)
PACS_RESTORE_HOLD_DAYS = env_int("PACS_RESTORE_HOLD_DAYS", 30)  # lifecycle rules leave a restored object this long
PACS_RESTORE_RETRY_AFTER_MAX = env_int("PACS_RESTORE_RETRY_AFTER_MAX", 300)  # the most Retry-After of a 503 says
# Restore estimates: the median of the last this many restores from a tier (0: always the tier's default).
PACS_RESTORE_ESTIMATE_HISTORY = env_int("PACS_RESTORE_ESTIMATE_HISTORY", 20)
# Ahead of need: when a study arrives, restore up to this many relevant priors of the patient (0: off),
# matched on "modality", "body_part" or both ("modality,body_part": either may match).
PACS_PRIORS_COUNT = env_int("PACS_PRIORS_COUNT", 3)
PACS_PRIORS_MATCH = os.environ.get("PACS_PRIORS_MATCH", "modality,body_part")
PACS_STUDY_SITE_SOURCE = os.environ.get("PACS_STUDY_SITE_SOURCE", "sender")
if PACS_STUDY_SITE_SOURCE not in ("sender", "institution"):
    raise ValueError("PACS_STUDY_SITE_SOURCE must be 'sender' or 'institution'")
# The DICOM node (`manage.py dicom_listener`, archive/dimse/). Peers are DICOM devices
# (admin, `manage.py dicom_device`). PACS_DIMSE_ALLOWED only bootstraps them: at the
# listener's start each "AE[@address-or-network]=site-code" entry without a device of
# its AE title becomes a store-only device. PACS_DIMSE_REJECT_UNKNOWN=false lets callers
# that are no enabled device associate, for C-ECHO only.
PACS_DIMSE_AE_TITLE = os.environ.get("PACS_DIMSE_AE_TITLE", "PACS")
PACS_DIMSE_PORT = env_int("PACS_DIMSE_PORT", 11112)
# FHIR: the identifier system of patient IDs that carry no Issuer of Patient ID (e.g. the hospital's MRN system).
PACS_FHIR_PATIENT_ID_SYSTEM = os.environ.get("PACS_FHIR_PATIENT_ID_SYSTEM", "")
PACS_DIMSE_ALLOWED = os.environ.get("PACS_DIMSE_ALLOWED", "")
PACS_DIMSE_REJECT_UNKNOWN = env_bool("PACS_DIMSE_REJECT_UNKNOWN", True)
# DICOM TLS (archive/dimse/tls.py): with a certificate and its key (PEM files) the node also listens with TLS
# on PACS_DIMSE_TLS_PORT (2762, DICOM over TLS); the plain port stays. With a CA bundle, clients must present a
# certificate it signed. Reports and other associations the node opens stay plain TCP for now.
PACS_DIMSE_TLS_CERT = os.environ.get("PACS_DIMSE_TLS_CERT", "")
PACS_DIMSE_TLS_KEY = os.environ.get("PACS_DIMSE_TLS_KEY", "")
PACS_DIMSE_TLS_CA = os.environ.get("PACS_DIMSE_TLS_CA", "")
PACS_DIMSE_TLS_PORT = env_int("PACS_DIMSE_TLS_PORT", 2762)
if bool(PACS_DIMSE_TLS_CERT) != bool(PACS_DIMSE_TLS_KEY):
    raise ValueError("PACS_DIMSE_TLS_CERT and PACS_DIMSE_TLS_KEY are set together or not at all")
if PACS_DIMSE_TLS_CA and not PACS_DIMSE_TLS_CERT:
    raise ValueError("PACS_DIMSE_TLS_CA needs PACS_DIMSE_TLS_CERT and PACS_DIMSE_TLS_KEY")

# JSON APIs (Django REST framework): JSON in and out, no browsable API (its pages need inline script),
# signed-in users only unless a view says otherwise (the EHR launch authenticates the EHR itself).
REST_FRAMEWORK = {
    # A Bearer header decides alone (never a session cookie sent along); without one, the session (with CSRF).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.BearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.views.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cloud PACS API",
    "DESCRIPTION": "JSON APIs of the PACS for RIS, scripts and EHRs: the worklist (list, filter, claim, release), "
    "reports (draft, save with version, sign, addendum), report templates, and the EHR launch. A signed-in session "
    "(with its CSRF token) or an `Authorization: Bearer` token; token clients read and draft but never sign a final "
    "report or an addendum. DICOMweb is described by DICOM PS3.18, not here.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "WorklistStatusEnum": "portal.worklist.statuses.Status",
        "ReportStatusEnum": "portal.reports.models.ReportStatus",
        "SignatureEnum": ["preliminary", "final"],
    },
}
# EHR launch (integrations/ehr/): how long the studies an EHR opened stay open to that browser session.
PACS_EHR_ACCESS_SECONDS = env_int("PACS_EHR_ACCESS_SECONDS", 4 * 3600)

# Periodic work (`manage.py housekeeping`, started by `make run`): management commands run by name in turn.
PACS_HOUSEKEEPING = [
    line.strip()
    for line in os.environ.get("PACS_HOUSEKEEPING", "worklist_expire;tiers apply --background").split(";")
    if line.strip()
]
PACS_HOUSEKEEPING_SECONDS = env_int("PACS_HOUSEKEEPING_SECONDS", 300)

# The worklist (portal/worklist/): a new study is ready to read at once unless a technologist must pass it first;
# a claim nobody touched for this long may be taken by another reader (`manage.py worklist_expire` releases it).
PACS_WORKLIST_AUTO_READY = env_bool("PACS_WORKLIST_AUTO_READY", True)
PACS_WORKLIST_CLAIM_IDLE_SECONDS = env_int("PACS_WORKLIST_CLAIM_IDLE_SECONDS", 30 * 60)

# Reports (portal/reports/): signing a final report or an addendum needs a second factor passed this recently
# (seconds); an older one is asked again through the MFA challenge.
PACS_REPORT_SIGN_MFA_SECONDS = env_int("PACS_REPORT_SIGN_MFA_SECONDS", 5 * 60)

TASKS = {"default": {"BACKEND": "django_tasks_db.backend.DatabaseBackend"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# Audit trail export to a SIEM: "udp://host:514" or "tcp://host:6514" (RFC 5424;
# TCP frames by octet counting, RFC 6587). Empty: no forwarding.
PACS_AUDIT_SYSLOG = os.environ.get("PACS_AUDIT_SYSLOG", "")

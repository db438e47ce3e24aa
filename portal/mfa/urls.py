"""URLs of the MFA pages, mounted at ``/mfa/``."""

from django.urls import path

from portal.mfa import views as mfa_views

urlpatterns = [
    path("", mfa_views.manage, name="mfa_manage"),
    path("enrol/", mfa_views.enrol, name="mfa_enrol"),
    path("verify/", mfa_views.verify, name="mfa_verify"),
    path("backup-codes/", mfa_views.backup_codes, name="mfa_backup_codes"),
    path("backup-codes/renew/", mfa_views.regenerate_backup_codes, name="mfa_backup_codes_renew"),
]

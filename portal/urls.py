"""Portal URLs: sign-in, sign-out (here or everywhere), password reset and change, home and its landings."""

from django.urls import path

from portal import views
from portal.accounts import views as auth_views

urlpatterns = [
    path("accounts/login/", auth_views.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.SignOutView.as_view(), name="logout"),
    path("accounts/logout/everywhere/", auth_views.sign_out_all, name="logout_everywhere"),
    path("accounts/password/reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "accounts/password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("accounts/password/change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("studies/", views.my_studies, name="my-studies"),
    path("operations/", views.operations, name="operations"),
    path("", views.home, name="home"),
]

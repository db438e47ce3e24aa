"""``{% sso_enabled %}``: whether the sign-in page should offer single sign-on."""

from django import template

from portal.sso import oidc

register = template.Library()


@register.simple_tag
def sso_enabled() -> bool:
    return oidc.enabled()

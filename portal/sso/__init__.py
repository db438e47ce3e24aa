"""Single sign-on through OpenID Connect."""

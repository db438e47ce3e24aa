"""The server-to-server EHR launch: an EHR asks for a one-time launch URL, the clinician's browser opens it.

``credentials`` authenticates the EHR (client secret or RFC 7523 assertion),
``tokens`` makes and checks the one-time launch tokens, ``launch`` issues and
consumes launches, ``api`` is the DRF endpoint and ``views`` the browser pages.
"""

"""Credentials for a DICOMweb server, from options or the environment, never shown."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

TOKEN_VARIABLE = "FASTSAM3D_DICOMWEB_TOKEN"
USER_VARIABLE = "FASTSAM3D_DICOMWEB_USER"
PASSWORD_VARIABLE = "FASTSAM3D_DICOMWEB_PASSWORD"
_CREDENTIAL_OPTIONS = (
    f"--dicomweb-token or {TOKEN_VARIABLE}; "
    f"--dicomweb-user/--dicomweb-password or {USER_VARIABLE}/{PASSWORD_VARIABLE}"
)


@dataclass(frozen=True)
class DicomwebAuth:
    """Credentials for a DICOMweb server: a bearer token, or a user and password (HTTP basic).

    A token, when given, is used and the user/password are not. Neither ``repr`` nor ``str``
    shows any of them.
    """

    token: str | None = field(default=None, repr=False)
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_options(
        cls, token: str | None = None, user: str | None = None, password: str | None = None
    ) -> DicomwebAuth:
        """The credentials given as options, else those of the environment
        (``FASTSAM3D_DICOMWEB_TOKEN``, ``FASTSAM3D_DICOMWEB_USER``, ``..._PASSWORD``; empty is
        unset). Options win; a user given as an option without its password takes the
        environment's (a password is better kept out of the command line).

        Raises:
            ValueError: a password without a user, or a token with spaces or control characters
                (it would not fit in an HTTP header); the message shows neither.
        """
        if user and not password:
            password = os.environ.get(PASSWORD_VARIABLE) or None
        if not (token or user or password):
            token, user, password = (
                os.environ.get(name) or None
                for name in (TOKEN_VARIABLE, USER_VARIABLE, PASSWORD_VARIABLE)
            )
        if token and re.search(r"[\s\x00-\x1f\x7f]", token):
            raise ValueError("the DICOMweb token contains spaces or control characters")
        if password and not user and not token:
            raise ValueError(
                f"a DICOMweb password was given without a user (--dicomweb-user or {USER_VARIABLE})"
            )
        return cls(token or None, user or None, password)

    def __repr__(self) -> str:
        kind = "bearer token" if self.token else "user and password" if self.user else "none"
        return f"DicomwebAuth({kind})"

    __str__ = __repr__

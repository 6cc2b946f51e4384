"""The DICOMweb options that ``segment`` and ``web`` share: a server's credentials.

Credentials come from an option or, better (a command line is visible to other users of the
machine and kept in shell histories), from the environment; they are never printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from ..io.dicomweb_auth import DicomwebAuth

DicomwebTokenOption = Annotated[
    Optional[str],
    typer.Option(
        "--dicomweb-token",
        metavar="TOKEN",
        help="Bearer token for the DICOMweb server (else $FASTSAM3D_DICOMWEB_TOKEN).",
        show_default=False,
    ),
]
DicomwebUserOption = Annotated[
    Optional[str],
    typer.Option(
        "--dicomweb-user",
        metavar="USER",
        help="User for the DICOMweb server's basic authentication (else "
        "$FASTSAM3D_DICOMWEB_USER).",
        show_default=False,
    ),
]
DicomwebPasswordOption = Annotated[
    Optional[str],
    typer.Option(
        "--dicomweb-password",
        metavar="PASSWORD",
        help="Its password (else $FASTSAM3D_DICOMWEB_PASSWORD).",
        show_default=False,
    ),
]


def dicomweb_auth(
    token: Optional[str], user: Optional[str], password: Optional[str]
) -> DicomwebAuth:
    """The credentials the options give, else the environment's (see the options' help)."""
    from ..io.dicomweb_auth import DicomwebAuth

    return DicomwebAuth.from_options(token, user, password)

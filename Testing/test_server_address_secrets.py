"""A server address whose password holds an unencoded '/', '?' or '#' (which end a URL's host
part) is refused in one line that shows none of the password, before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import free_port, invoke_cli
from test_slicer_mrml import CT_IMAGE

from fastsam3d_core.serving import display_url


@pytest.mark.parametrize("separator", ["/", "?", "#"])
def test_a_password_cut_by_a_url_delimiter_is_never_shown(separator: str):
    shown = display_url(f"http://user:hun{separator}ter2@127.0.0.1:8000/v1")
    assert "hun" not in shown and "ter2" not in shown
    assert shown == "http://***@127.0.0.1:8000/v1"
    assert display_url(f"user:hun{separator}ter2@127.0.0.1:8000") == "***@127.0.0.1:8000"


@pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found")
def test_segment_refuses_such_an_address_in_one_line_without_the_password(tmp_path: Path):
    server = f"http://user:hun/ter2@127.0.0.1:{free_port()}"
    result = invoke_cli(["segment", CT_IMAGE, "--point", "0,150,130", "--server", server,
                         "-o", tmp_path / "out.seg.nrrd"])  # fmt: skip
    said = result.output + result.stderr
    assert result.exit_code == 1 and "hun" not in said and "ter2" not in said, said
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: http://***@127.0.0.1:"), error
    assert "internal error" not in error[0] and "%2F" in error[0]
    assert not (tmp_path / "out.seg.nrrd").exists()


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "])
def test_the_token_is_taken_from_a_bearer_header_in_any_case(header: str):
    from fastsam3d_core.serving.service import RequestError, check_token

    check_token("s3cret", header)  # HTTP's authentication schemes are case-insensitive
    for wrong in ("s3cret", "Basic s3cret", "Bearer s3cre", ""):
        with pytest.raises(RequestError, match="missing or wrong token"):
            check_token("s3cret", wrong)

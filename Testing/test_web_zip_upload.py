"""Zips uploaded to (or dropped on) the page, in-process: unpacked flat into the upload's folder,
or refused in one line (zip-slip, links, zip bombs announced or lying, damage), the current
image staying. Also the receiving path the browser takes (off the event loop), without one.
"""

from __future__ import annotations

import asyncio
import io
import stat
import zipfile
from pathlib import Path

import pytest
from test_dicom_series import DICOM_DIR
from test_web_page import CT_IMAGE, nodes, page, settle, upload  # noqa: F401 (page: a fixture)
from test_web_upload_progress import send_in_slices

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")

from fastsam3d_web.upload_chunks import save_uploads  # noqa: E402
from fastsam3d_web.uploads import MAX_IMAGE_GB_ENV, UploadRefused  # noqa: E402
from fastsam3d_web.zip_upload import unpack_zip  # noqa: E402


def _zip(entries: dict, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            if isinstance(name, zipfile.ZipInfo):
                name.compress_type = method
            archive.writestr(name, data)
    return buffer.getvalue()


def _written(tmp_path: Path, content: bytes, name: str = "x.zip") -> Path:
    folder = tmp_path / "upload"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def _refused(archive: Path, limit: int | None = None) -> str:
    with pytest.raises(UploadRefused) as refusal:
        unpack_zip(archive, archive.parent, limit)
    message = str(refusal.value)
    assert "\n" not in message and message.startswith(f"{archive.name}: "), message
    assert message.endswith("the current image stays"), message
    return message


def test_a_zip_is_unpacked_flat_and_clutter_left_out(tmp_path: Path):
    entries = {"a/b/one.dcm": b"1", "two.dcm": b"22", "c/": b"", "__MACOSX/a/._one.dcm": b"x",
               "a/.DS_Store": b"y"}  # fmt: skip
    archive = _written(tmp_path, _zip(entries))
    paths = unpack_zip(archive, archive.parent)
    assert [p.name for p in paths] == ["one.dcm", "two.dcm"]
    assert [p.read_bytes() for p in paths] == [b"1", b"22"]
    assert all(p.parent == archive.parent for p in paths)
    # Names that repeat in different folders keep their folders in their names.
    twice = _written(tmp_path, _zip({"s1/im1": b"a", "s2/im1": b"b"}), "twice.zip")
    assert sorted(p.name for p in unpack_zip(twice, twice.parent)) == ["s1_im1", "s2_im1"]


@pytest.mark.parametrize("name", ["../evil.nrrd", "a/../../evil.nrrd", "/etc/evil", "C:/evil",
                                  "..\\..\\evil.nrrd"])  # fmt: skip
def test_an_entry_that_climbs_out_is_refused_and_nothing_is_written(tmp_path: Path, name: str):
    archive = _written(tmp_path, _zip({"fine.nrrd": b"ok", name: b"evil"}))
    assert "points outside the zip's folder" in _refused(archive)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.zip"]


def test_a_link_or_an_encrypted_entry_is_refused(tmp_path: Path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    assert "is a link" in _refused(_written(tmp_path, _zip({link: b"/etc/passwd"}), "l.zip"))
    data = bytearray(_zip({"secret.nrrd": b"x"}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the flag bits
        at = data.index(signature) + offset
        data[at] |= 1
    assert "is encrypted" in _refused(_written(tmp_path, bytes(data), "e.zip"))


def test_a_zip_bomb_is_refused_before_inflating_and_while_inflating(tmp_path: Path):
    # Announced: the entries' sizes in the central directory exceed the limit.
    bomb = _written(tmp_path, _zip({f"zeros{n}.raw": b"\0" * 600_000 for n in range(3)}))
    assert bomb.stat().st_size < 20_000
    assert "unpacks to more than 0.001 GB" in _refused(bomb, limit=1_000_000)
    assert not (bomb.parent / "zeros0.raw").exists()  # refused before any entry was written
    # Lying: the headers announce 10 bytes; the data inflates to 5 MB (the CRC of 10 bytes
    # fails, or the cap stops it: either way, refused).
    data = bytearray(_zip({"liar.raw": b"\0" * 5_000_000}))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    message = _refused(_written(tmp_path, bytes(data), "liar.zip"), limit=1_000_000)
    assert "damaged" in message or "unpacks to more than" in message
    assert (bomb.parent / "liar.raw").stat().st_size <= 10


def test_a_damaged_zip_or_an_empty_one_is_refused(tmp_path: Path):
    whole = _zip({"a.nrrd": b"x" * 1000})
    assert "damaged" in _refused(_written(tmp_path, whole[: len(whole) // 2], "half.zip"))
    assert "holds no file" in _refused(_written(tmp_path, _zip({"dir/": b""}), "empty.zip"))


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_damaged_compressed_data_is_refused_in_one_line(tmp_path: Path, method: int):
    """The directory is whole, the compressed stream is not: the decompressor's own error
    (zlib.error, OSError, LZMAError) must become the page's one line."""
    data = bytes(range(256)) * 64
    whole = bytearray(_zip({"a.nrrd": data}, method))
    start = zipfile.sizeFileHeader + len("a.nrrd") + 4  # inside the stream's first bytes
    whole[start : start + 16] = bytes(16)
    assert "damaged" in _refused(_written(tmp_path, bytes(whole), "broken.zip"))


def test_the_limit_follows_the_servers_setting(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(MAX_IMAGE_GB_ENV, "0.001")
    folder = tmp_path / "upload"
    folder.mkdir()
    content = _zip({"zeros.raw": b"\0" * 2_000_000})
    with pytest.raises(UploadRefused, match=f"more than 0.001 GB.*{MAX_IMAGE_GB_ENV}"):
        save_uploads([{"name": "z.zip", "content": content}], folder)


needs_series = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason=f"{DICOM_DIR} not found")


@needs_series
def test_a_dicom_series_as_a_zip_opens_with_its_series_and_a_bad_zip_keeps_it(page):  # noqa: F811
    series = {f"ct/{path.name}": path.read_bytes() for path in sorted(DICOM_DIR.iterdir())}
    upload(page, "series.zip", _zip(series))
    assert page.state.error == ""
    volume = page.volume
    assert nodes(page, "vtkMRMLScalarVolumeNode") == [volume]
    assert volume.GetImageData().GetDimensions()[2] == len(series)
    assert page.source.series is not None  # a DICOM image: its SEG can be written
    upload(page, "slip.zip", _zip({"../../x.nii.gz": CT_IMAGE.read_bytes()}))
    assert "zip-slip" in page.state.error and "\n" not in page.state.error
    assert page.volume is volume and nodes(page, "vtkMRMLScalarVolumeNode") == [volume]
    assert sorted(p.name for p in Path(page.work_folder).glob("upload-*")) == [
        page.source.folder.name
    ]  # the refused zip's folder went; the series' stays for its SEG


@needs_series
def test_the_browsers_files_are_checked_off_the_event_loop_with_progress(page):  # noqa: F811
    """An upload as the browser sends it (in slices; Testing/test_web_upload_progress.py
    drives them through the browser too): the series comes as one zip, unpacked and
    checked on another thread while the loop goes on (its ticks see the "Unpacking"/"Checking"
    lines, which only the worker sets, and only while it runs: about 0.3 s of checks here);
    the progress line says each step and clears at the end."""
    names = sorted(DICOM_DIR.iterdir())
    series = _zip({f"ct/{path.name}": path.read_bytes() for path in names})
    lines, ticks = [], []

    async def watch() -> None:
        while True:
            ticks.append(page.state.work)  # the loop runs meanwhile
            if page.state.work and (not lines or lines[-1] != page.state.work):
                lines.append(page.state.work)
            await asyncio.sleep(0.005)

    async def run() -> None:
        watcher = asyncio.ensure_future(watch())
        await send_in_slices(page.receiver, [("series.zip", series)])
        watcher.cancel()

    asyncio.run(run())
    settle(page)
    assert page.state.error == "" and page.source.series is not None
    opening = f"Opening {len(names)} files..."
    assert lines[0] == "Receiving the files..." and lines[-1] == opening
    assert lines[1:-1] == ["Unpacking series.zip...", f"Checking {len(names)} files..."]
    # Not a frozen loop: it ticked while the worker thread unpacked and checked, before the
    # files were opened (run on the loop, the worker's lines would come only after it).
    assert opening in ticks  # inline, the worker's lines would be shown over it
    working = ticks[: ticks.index(opening)]
    assert sum(tick.startswith(("Unpacking", "Checking")) for tick in working) >= 2
    assert page.state.work == ""

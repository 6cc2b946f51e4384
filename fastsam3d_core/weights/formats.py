"""What a checkpoint file looks like from its first bytes, without torch (for the downloader)."""

from __future__ import annotations

# ``torch.save`` writes a zip file; files from before PyTorch 1.6 are a pickle (protocol >= 2).
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_MAGIC = b"\x80"
# safetensors caps its JSON header at 100 MB.
SAFETENSORS_MAX_HEADER = 100_000_000


def is_checkpoint_start(head: bytes) -> bool:
    """Whether a file's first bytes can start a ``torch.save`` file (zip, or a legacy pickle)."""
    return head.startswith((ZIP_MAGIC, PICKLE_PROTOCOL_MAGIC))


def is_safetensors_start(head: bytes) -> bool:
    """Whether a file's first bytes can start a safetensors file: an 8-byte little-endian
    header length, then the header's JSON object (the CLIP text weights come in this form)."""
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 2 <= header_length <= SAFETENSORS_MAX_HEADER and head[8:9] == b"{"


def describe_start(head: bytes) -> str:
    """What a file that is not a checkpoint seems to be, from its first bytes."""
    if not head:
        return "the file is empty"
    text = head.lstrip().lower()
    if text.startswith(b"<"):
        return "it is an HTML or XML page (an error or login page saved instead of the weights?)"
    if text.startswith((b"{", b"[")):
        return "it is JSON text (an error message from the server?)"
    printable = sum(32 <= byte < 127 or byte in b"\r\n\t" for byte in head)
    if printable == len(head):
        return f"it is text starting {head[:32].decode('ascii')!r}"
    return "its first bytes are those of neither a zip nor a pickle file"

"""What a checkpoint file looks like from its first bytes, without torch (for the downloader)."""

from __future__ import annotations

# ``torch.save`` writes a zip file; files from before PyTorch 1.6 are a pickle (protocol >= 2).
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_MAGIC = b"\x80"


def is_checkpoint_start(head: bytes) -> bool:
    """Whether a file's first bytes can start a ``torch.save`` file (zip, or a legacy pickle)."""
    return head.startswith((ZIP_MAGIC, PICKLE_PROTOCOL_MAGIC))


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

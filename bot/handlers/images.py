"""What a message holds as an input image, and which capability a request
that starts from images should use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from telegram import Message

from providers.registry import Registry, RoutingError
from providers.types import Capability

# Telegram lets bots download files up to 20 MB.
MAX_INPUT_BYTES = 20 * 1024 * 1024
SUPPORTED_MIMES = frozenset({"image/jpeg", "image/png", "image/webp"})


@dataclass(frozen=True)
class ImageProblem:
    key: str  # i18n key
    values: dict[str, Any]


def input_image(message: Message | None) -> dict[str, Any] | ImageProblem | None:
    """The message's image as a task input, a problem to tell the user, or
    None when the message carries no file at all."""
    if message is None:
        return None
    if message.photo:
        size = message.photo[-1]
        return {"file_id": size.file_id, "mime": "image/jpeg", "width": size.width, "height": size.height}
    document = message.document
    if document is None:
        if message.sticker or message.animation or message.video:
            return ImageProblem("err_unsupported_file", {})
        return None
    if (document.mime_type or "") not in SUPPORTED_MIMES:
        return ImageProblem("err_unsupported_file", {})
    if document.file_size and document.file_size > MAX_INPUT_BYTES:
        return ImageProblem("err_file_too_big", {"size": round(document.file_size / 1024 / 1024, 1), "limit": 20})
    return {"file_id": document.file_id, "mime": document.mime_type}


def choose_capability(
    registry: Registry, options: list[Capability], forced: str | None, preferred: str | None = None,
    prompt_chars: int = 0,
) -> Capability:
    """The first of ``options`` some vendor can serve now (edit before
    img2img, say). Raises the RoutingError of the first option otherwise."""
    first_error: RoutingError | None = None
    for capability in options:
        try:
            registry.candidates(capability, forced=forced, preferred=preferred, prompt_chars=prompt_chars)
        except RoutingError as exc:
            first_error = first_error or exc
            continue
        return capability
    assert first_error is not None
    raise first_error

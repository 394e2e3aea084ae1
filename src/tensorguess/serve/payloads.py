"""The images inside a request: TF Serving's JSON (`{"b64": ...}`) and multipart uploads.

Pure functions over bytes already read (the body's size is bounded before they run): each
either returns the encoded images or raises `BadRequest` with one line naming what is
wrong and where, which the server answers with 400. Nothing is written anywhere: a
multipart body is split in memory, where Starlette's own form parser would spool every
file over 1 MB to a temporary file. Nor is anything copied that need not be: a multipart
file is a view into the body, and base64 is decoded straight from the text JSON gave.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

Buffer = bytes | bytearray | memoryview
URL_SAFE = str.maketrans("-_", "+/")
# The input's name in saved_model/'s serving_default signature (training/model_writer.py).
INPUT_NAME = "images"
SIGNATURES = ("", "serving_default")


class BadRequest(ValueError):
    """A request the server cannot use; the message says why, in one line."""


@dataclass(frozen=True)
class Upload:
    """One encoded image from a request, with the name it is reported under."""

    name: str
    data: Buffer | str  # the bytes, or base64 text still to decode (off the event loop)

    def encoded(self) -> Buffer:
        """The image's bytes; base64 text is decoded here, or `BadRequest` says why not."""
        if isinstance(self.data, str):
            return decode_base64(self.data)
        return self.data


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, line breaks allowed (TF Serving clients send both)."""
    # Most clients send one line in the standard alphabet: decoded as it is, with no copy
    # of the text without its line breaks, nor one translated to the standard alphabet.
    if "-" in text or "_" in text:
        text = text.translate(URL_SAFE)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the b64 value is not valid base64") from None


def check_signature(signature_name: str | None) -> None:
    """Our model has one signature, TF Serving's default."""
    if signature_name not in (None, *SIGNATURES):
        raise BadRequest(
            f"unknown signature_name {str(signature_name)[:100]!r}; this model has serving_default"
        )


def _image_in(value: Any, where: str) -> str:
    """The base64 text of `{"b64": "..."}`, or of `{"images": {"b64": "..."}}` (one named
    input: any name is taken, for clients written for another image model)."""
    if isinstance(value, dict) and len(value) == 1 and not isinstance(value.get("b64"), str):
        (value,) = value.values()
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return value["b64"]
    raise BadRequest(f'{where}: expected an encoded image as {{"b64": "<base64>"}}')


def predict_images(instances: list | None, inputs: Any) -> tuple[list[Upload], bool]:
    """The images of a predict request and whether it was columnar (`inputs`), whose answer
    is `outputs` rather than `predictions`, as TF Serving does."""
    if (instances is None) == (inputs is None):
        raise BadRequest('give either "instances" (a list) or "inputs", as TF Serving takes')
    if instances is not None:
        texts = [_image_in(value, f"instance {index}") for index, value in enumerate(instances)]
        columnar = False
    else:
        if isinstance(inputs, dict) and len(inputs) == 1 and "b64" not in inputs:
            (inputs,) = inputs.values()  # {"images": [...]}
        if not isinstance(inputs, list):
            inputs = [inputs]
        texts = [_image_in(value, f"input {index}") for index, value in enumerate(inputs)]
        columnar = True
    if not texts:
        raise BadRequest("the request holds no image")
    where = "input" if columnar else "instance"
    return [Upload(f"{where} {index}", text) for index, text in enumerate(texts)], columnar


def classify_images(examples: list[dict]) -> list[Upload]:
    """The images of a classify request: each example has one feature `{"b64": ...}`."""
    uploads = []
    for index, example in enumerate(examples):
        images = [value for value in example.values() if isinstance(value, dict) and "b64" in value]
        if len(images) != 1:
            raise BadRequest(f'example {index}: expected one feature {{"b64": "<base64>"}}')
        uploads.append(Upload(f"example {index}", _image_in(images[0], f"example {index}")))
    if not uploads:
        raise BadRequest("the request holds no example")
    return uploads


def multipart_files(content_type: str, body: Buffer) -> list[Upload]:
    """The files of a multipart/form-data body, in order, named by their file names; each
    file is a view into `body`, unless the parser hands it over in pieces."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("the multipart Content-Type has no boundary")
    whole = memoryview(body)
    parts: list[tuple[dict[bytes, bytes], list[memoryview]]] = []
    current: dict = {}
    ended = []

    def begin() -> None:
        current.update(headers={}, data=[], field=bytearray(), value=bytearray())

    def header_end() -> None:
        current["headers"][bytes(current["field"]).lower()] = bytes(current["value"])
        current["field"], current["value"] = bytearray(), bytearray()

    def extend(key: str):
        return lambda data, start, end: current[key].extend(data[start:end])

    def part_data(data, start: int, end: int) -> None:
        # A piece of the body itself is a view; the parser's own look-behind is copied.
        piece = whole[start:end] if data is body else memoryview(bytes(data[start:end]))
        current["data"].append(piece)

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": extend("field"),
        "on_header_value": extend("value"),
        "on_header_end": header_end,
        "on_part_data": part_data,
        "on_part_end": lambda: parts.append((current["headers"], current["data"])),
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise BadRequest(f"malformed multipart body ({error})") from None
    if not ended:
        raise BadRequest("the multipart body is cut short (no closing boundary)")
    uploads = []
    for headers, pieces in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if b"filename" in disposition:
            name = disposition[b"filename"].decode("utf-8", "replace") or f"file {len(uploads)}"
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            uploads.append(Upload(name, data))
    if not uploads:
        raise BadRequest(
            "no file in the upload: send the photos as multipart files "
            "(curl -F files=@photo.jpg ...)"
        )
    return uploads

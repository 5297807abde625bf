"""The app's shell: body caps while streaming, errors as one JSON line, image re-encoding, exposure rules."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.datastructures import UploadFile

from ldm.errors import ConfigError
from ldm.web.app import create_app
from ldm.web.security import WebInputError
from ldm.web.server import check_exposure, parse_auth
from ldm.web.settings import WebSettings
from ldm.web.uploads import read_upload, reencode_image

REPO = Path(__file__).resolve().parents[2]


def _png(size=(8, 6), mode="RGB", exif_orientation: int | None = None, fmt="PNG") -> bytes:
    image = Image.new(mode, size, (200, 30, 90, 128)[: len(mode)])
    image.putpixel((0, 0), (0, 0, 0, 255)[: len(mode)])
    buffer = io.BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(buffer, fmt, exif=exif)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def app_with_probe(web_settings):
    """The app plus a test-only route that reads a JSON body, one that fails, one with a typed parameter."""
    app = create_app(web_settings)

    @app.post("/api/probe/echo")
    async def echo(payload: dict) -> dict:
        return {"keys": sorted(payload)}

    @app.get("/api/probe/crash")
    def crash() -> dict:
        raise RuntimeError("boom")

    @app.get("/api/probe/count")
    def count(n: int) -> dict:
        return {"n": n}

    return app


def test_a_json_body_over_the_cap_is_refused_before_and_while_streaming(app_with_probe, web_settings):
    client = TestClient(app_with_probe)
    big = b'{"a": "' + b"x" * web_settings.max_body_bytes + b'"}'
    declared = client.post("/api/probe/echo", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "request body is larger than 1 MiB" in declared.json()["error"]

    def chunks():  # no Content-Length: the cap must cut the stream itself
        for _ in range(4):
            yield b"x" * (web_settings.max_body_bytes // 2)

    streamed = client.post("/api/probe/echo", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert "request body is larger than 1 MiB" in streamed.json()["error"]
    assert client.post("/api/probe/echo", json={"b": 1, "a": 2}).json() == {"keys": ["a", "b"]}


def test_a_multipart_upload_over_the_total_cap_is_refused(web_root):
    app = create_app(WebSettings(root=web_root, extra_hosts=("testserver",), max_upload_bytes=1000))
    client = TestClient(app)
    response = client.post("/api/probe/none", files={"file": ("a.png", b"x" * 2000, "image/png")})
    assert response.status_code == 413
    assert "upload is larger than 1000 bytes in all" in response.json()["error"]


def test_errors_are_one_json_line_and_the_server_goes_on(app_with_probe):
    client = TestClient(app_with_probe, raise_server_exceptions=False)
    missing = client.get("/api/nothing-here")
    assert (missing.status_code, missing.json()["error"]) == (
        404,
        "no page or action at /api/nothing-here; use the links at the top",
    )
    wrong_method = client.delete("/api/probe/count")
    assert wrong_method.status_code == 405 and "DELETE is not allowed" in wrong_method.json()["error"]
    invalid = client.get("/api/probe/count", params={"n": "seven"})
    assert invalid.status_code == 422
    assert invalid.json()["error"].startswith("n: input should be a valid integer")
    crash = client.get("/api/probe/crash")
    assert crash.status_code == 500
    assert crash.json()["error"] == "internal error (RuntimeError) in /api/probe/crash; the server log has the details"
    assert client.get("/api/probe/count", params={"n": 3}).json() == {"n": 3}


def test_reencode_keeps_pixels_only_and_turns_by_exif():
    upright = reencode_image(_png((8, 6), exif_orientation=6, fmt="JPEG"), "photo.jpg")
    assert upright.size == (6, 8)  # orientation 6: rotate 90 degrees
    assert not upright.info.get("exif")
    rgba = reencode_image(_png(mode="RGBA"), "a.png")
    assert rgba.mode == "RGBA" and rgba.getpixel((1, 1))[3] == 128
    assert reencode_image(_png(mode="L"), "grey.png").mode == "RGB"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\necho not an image\n", "'evil.png' is not an image; upload a PNG, JPEG or WebP photo"),
        (_png()[:60], "'evil.png' is a damaged image"),
        (_png((300, 200)), "'evil.png' is 300x200 pixels, more than 50000 in all; scale it down"),
    ],
)
def test_reencode_refuses_non_images_damage_and_bombs(data, message):
    with pytest.raises(WebInputError) as info:
        reencode_image(data, "evil.png", max_pixels=50_000)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_read_upload_stops_past_the_limit():
    upload = UploadFile(io.BytesIO(b"x" * 5000), filename="../../big.safetensors")
    with pytest.raises(WebInputError) as info:
        asyncio.run(read_upload(upload, 4096, "embedding"))
    assert info.value.status == 413
    assert str(info.value) == "embedding 'big.safetensors' is larger than 4096 bytes; send a smaller file"
    small = UploadFile(io.BytesIO(b"abc"), filename="a.pt")
    assert asyncio.run(read_upload(small, 3, "embedding")) == b"abc"


def test_public_host_needs_auth_and_warns(caplog):
    with pytest.raises(ConfigError, match="--host 0.0.0.0 opens the UI to the network; add --auth user:password"):
        check_exposure(WebSettings(host="0.0.0.0"))
    with caplog.at_level(logging.WARNING, logger="ldm.web.server"):
        check_exposure(WebSettings(host="0.0.0.0", auth=("me", "pw")))
    assert "anyone who can reach it and knows the password" in caplog.text
    check_exposure(WebSettings())  # localhost: no auth needed
    with pytest.raises(ConfigError, match="is not user:password"):
        parse_auth("only-a-user")


def test_invoke_web_on_every_interface_without_auth_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "invoke.py"), "--web", "--host", "0.0.0.0", "--port", "9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --host 0.0.0.0 opens the UI to the network; add --auth user:password, or drop --host"
    ]

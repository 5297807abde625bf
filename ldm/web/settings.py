"""Where the web UI reads and writes, and its limits. Every file a request touches lies under one of these
roots and is named by an id (ldm/web/security.py), never by a path from the request."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MiB = 2**20


@dataclass
class WebSettings:
    root: Path = field(default_factory=Path.cwd)  # the project folder main.py runs in
    host: str = "127.0.0.1"
    port: int = 9090
    auth: tuple[str, str] | None = None  # (user, password) for HTTP Basic; required off localhost
    extra_hosts: tuple[str, ...] = ()  # more Host names to accept (tests: "testserver")
    caption_model: Path | None = None  # a BLIP captioning folder on disk, if the user has one
    max_image_bytes: int = 20 * MiB  # one uploaded photo
    max_image_pixels: int = 8192 * 8192  # a larger image is refused before it is decoded (decompression bombs)
    max_embedding_bytes: int = 64 * MiB  # one uploaded embedding file
    max_upload_files: int = 200
    max_upload_bytes: int = 256 * MiB  # a whole multipart request (a batch of photos)
    max_body_bytes: int = 1 * MiB  # any other request body (JSON, forms)
    python: str | None = None  # interpreter for the training child (default: this one)

    @property
    def data_root(self) -> Path:
        return self.root / "training_data"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs" / "web"

    @property
    def public(self) -> bool:
        """Bound to every interface: any Host may arrive, so HTTP Basic auth guards it instead."""
        return self.host in ("0.0.0.0", "::")

    def allowed_hosts(self) -> set[str]:
        """Host header values this server answers (DNS rebinding: any other name is refused)."""
        names = {self.host, "127.0.0.1", "localhost", "[::1]", *self.extra_hosts}
        if self.host in ("0.0.0.0", "::"):
            names.discard(self.host)
        allowed = set()
        for name in names:
            allowed.add(f"{name}:{self.port}")
            if self.port == 80 or name in self.extra_hosts:
                allowed.add(name)
        return allowed

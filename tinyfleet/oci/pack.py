"""Turn static binaries into scratch images, one per platform, under one multi-arch OCI index.

`build` is pure (it reads the input files and nothing else) and deterministic: same files and options
give the same digests, byte for byte, because every timestamp, owner and ordering in the tar, the
gzip header and the JSON documents is fixed. `push` uploads the result; no Docker daemon is involved.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shlex
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tinyfleet.oci import elf
from tinyfleet.oci import manifest as mf
from tinyfleet.oci.errors import PackError
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.reference import ImageReference
from tinyfleet.oci.registry import RegistryClient

EPOCH = "1970-01-01T00:00:00Z"
SECOND_NS = 1_000_000_000


@dataclass(frozen=True)
class PackSpec:
    binaries: Mapping[Platform, Path]
    binary_path: str = "/app"
    adds: tuple[tuple[Path, str], ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    healthcheck: str | None = None
    health_interval_s: float = 3.0
    health_retries: int = 3
    health_timeout_s: float = 10.0  # how long one check may take before it counts as failed
    user: str = "65534:65534"  # nobody: least privilege unless asked otherwise


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class PackedImage:
    index: Blob
    manifests: tuple[Blob, ...]
    blobs: tuple[Blob, ...]  # configs and layers
    sizes: dict[Platform, int] = field(default_factory=dict)  # compressed size per platform

    @property
    def digest(self) -> str:
        return self.index.digest


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _check_binary(platform: Platform, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackError(f"cannot read binary for {platform}: {exc}") from exc
    try:
        facts = elf.read(data)
    except elf.ElfError as exc:
        raise PackError(f"{path}: {exc}; scratch images need a static executable") from exc
    if facts.machine != platform.architecture:
        raise PackError(f"{path} is built for {facts.machine}, not {platform.architecture}; "
                        f"pass the right binary for {platform}")
    if facts.dynamic:
        raise PackError(f"{path} is dynamically linked; scratch images have no loader - link it with -static")
    wanted = int(platform.variant[1:]) if platform.architecture == "arm" and platform.variant else None
    if wanted is not None and facts.arm_variant is not None and facts.arm_variant > wanted:
        raise PackError(f"{path} holds ARMv{facts.arm_variant} code, which an {platform} board cannot run; "
                        f"build it for ARMv{wanted} (e.g. the armel toolchain for v6)")
    return data


def _layer(files: Iterable[tuple[str, bytes, int]]) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip) for files given as (absolute path, content, mode)."""
    entries: dict[str, tuple[bytes | None, int]] = {}
    for path, data, mode in files:
        pure = PurePosixPath(path)
        if not pure.is_absolute() or ".." in pure.parts:
            raise PackError(f"destination {path!r} must be an absolute path without '..'")
        for parent in reversed(pure.parents[:-1]):
            entries.setdefault(str(parent).lstrip("/") + "/", (None, 0o755))
        entries[str(pure).lstrip("/")] = (data, mode)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(entries):
            data, mode = entries[name]
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return raw.getvalue(), compressed.getvalue()


def _healthcheck(spec: PackSpec) -> dict[str, object] | None:
    if not spec.healthcheck:
        return None
    interval = int(spec.health_interval_s * SECOND_NS)
    # A generous timeout: a check that is merely slow (a busy Pi Zero, qemu) must not count as a failure.
    timeout = int(spec.health_timeout_s * SECOND_NS)
    return {"Test": ["CMD", *shlex.split(spec.healthcheck)], "Interval": interval, "Timeout": timeout,
            "StartPeriod": interval, "Retries": spec.health_retries}


def build(spec: PackSpec) -> PackedImage:
    if not spec.binaries:
        raise PackError("give at least one --binary PLATFORM=PATH")
    extra = []
    for src, dest in spec.adds:
        try:
            mode = 0o755 if os.stat(src).st_mode & stat.S_IXUSR else 0o644
            extra.append((dest, src.read_bytes(), mode))
        except OSError as exc:
            raise PackError(f"cannot read --add source {src}: {exc}") from exc
    manifests, blobs, descriptors, sizes = [], [], [], {}
    for platform in sorted(spec.binaries):
        binary = _check_binary(platform, spec.binaries[platform])
        tar, layer = _layer([(spec.binary_path, binary, 0o755), *extra])
        image_config: dict[str, object] = {
            "Entrypoint": list(spec.entrypoint or (spec.binary_path,)), "Cmd": list(spec.cmd) or None,
            "Env": [f"{k}={v}" for k, v in spec.env], "Labels": dict(spec.labels) or None,
            "User": spec.user or None, "Healthcheck": _healthcheck(spec)}
        config = Blob(mf.OCI_CONFIG, _json({
            **platform.oci(), "created": EPOCH,
            "config": {k: v for k, v in image_config.items() if v is not None},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
            "history": [{"created": EPOCH, "created_by": "tinyfleet image pack"}]}))
        layer_blob = Blob(mf.OCI_LAYER_GZIP, layer)
        manifest = Blob(mf.OCI_MANIFEST, _json({
            "schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": config.media_type, "digest": config.digest, "size": len(config.data)},
            "layers": [{"mediaType": layer_blob.media_type, "digest": layer_blob.digest,
                        "size": len(layer_blob.data)}]}))
        blobs += [config, layer_blob]
        manifests.append(manifest)
        sizes[platform] = len(config.data) + len(layer_blob.data)
        descriptors.append({"mediaType": manifest.media_type, "digest": manifest.digest,
                            "size": len(manifest.data), "platform": platform.oci()})
    index = Blob(mf.OCI_INDEX, _json({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": descriptors}))
    return PackedImage(index, tuple(manifests), tuple(blobs), sizes)


def push(client: RegistryClient, ref: ImageReference, packed: PackedImage) -> str:
    """Upload blobs, then manifests, then the index (tagged when `ref` has a tag). Returns the index
    digest; an interrupted push leaves only unreferenced blobs, never a tag to a partial image."""
    for blob in packed.blobs:
        client.push_blob(ref, blob.data, blob.digest)
    for manifest in packed.manifests:
        client.push_manifest(ref, manifest.data, manifest.media_type, manifest.digest)
    client.push_manifest(ref, packed.index.data, packed.index.media_type, packed.index.digest)
    if ref.tag:
        client.push_manifest(ref, packed.index.data, packed.index.media_type, ref.tag)
    return packed.digest

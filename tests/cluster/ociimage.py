"""Assemble a one-layer OCI image archive from files, for the real test node (tests/cluster/realnode.py).

    write_oci_archive(out, name="localhost/sheepdog/pause:1", files={"/pause": (data, 0o755)},
                      entrypoint=["/pause"], user="65535:65535")

The archive is an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...), which
`ctr -n k8s.io images import` reads; index.json names the image with containerd's
`io.containerd.image.name` annotation (and the OCI ref-name annotation, the tag), so no
--base-name is needed. Everything is deterministic (mtime 0, uid/gid 0, sorted entries): the same
files give the same digests, so an image imported twice is the same image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, mode: int, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.type = mode, size, kind
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer_tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed layer holding `files` ({absolute path: (content, mode)}) and their parent
    directories (0755), in sorted order."""
    if not files:
        raise ValueError("an image needs at least one file")
    dirs: set[str] = set()
    for path in files:
        if not path.startswith("/") or path.endswith("/") or "/../" in f"{path}/":
            raise ValueError(f"file paths must be absolute file names, got {path!r}")
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for d in sorted(dirs):
        members.append((_info(d + "/", 0o755, kind=tarfile.DIRTYPE), None))
    for path in sorted(files):
        data, mode = files[path]
        members.append((_info(path.lstrip("/"), mode, len(data)), data))
    return _tar_bytes(members)


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def build_image(
    name: str,
    files: dict[str, tuple[bytes, int]],
    entrypoint: list[str],
    user: str = "",
    env: list[str] | None = None,
    labels: dict[str, str] | None = None,
    arch: str = "amd64",
) -> tuple[str, dict[str, bytes]]:
    """(manifest digest, {path in the layout: content}) of a one-layer image."""
    if ":" not in name.rsplit("/", 1)[-1]:
        raise ValueError(f"image name needs a tag, got {name!r}")
    raw = layer_tar(files)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    # mtime=0 and no file name: gzip's header is then the same on every run.
    layer_digest, layer = _blob(gzip.compress(raw, mtime=0))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "User": user,
            "Labels": labels or {},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "tests/cluster/ociimage.py"}],
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
            },
            "platform": {"architecture": arch, "os": "linux"},
        }],
    }
    layout = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for digest, data in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
        layout["blobs/sha256/" + digest.split(":", 1)[1]] = data
    return manifest_digest, layout


def write_oci_archive(out: str | Path, name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str],
                      **kwargs) -> str:
    """Writes the image as an OCI archive (a tar of the layout) to `out`; returns the manifest
    digest, which is what the kubelet reports as a container's imageID (name@digest)."""
    digest, layout = build_image(name, files, entrypoint, **kwargs)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("blobs/", 0o755, kind=tarfile.DIRTYPE), None),
        (_info("blobs/sha256/", 0o755, kind=tarfile.DIRTYPE), None),
    ]
    for path in sorted(layout):
        members.append((_info(path, 0o644, len(layout[path])), layout[path]))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(_tar_bytes(members))
    tmp.replace(out)  # a reader never sees half an archive
    return digest

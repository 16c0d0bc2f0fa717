"""Upload an export to s3://bucket/prefix with boto3.

Credentials and endpoint come from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL for an S3-compatible store such as MinIO, AWS_DEFAULT_REGION); in a cluster the
export Job gets them from the Secret that spec.export.credentialsSecretRef names, never from the
spec itself.

boto3 rather than fsspec's s3fs: s3fs 2026.9 needs aiobotocore 3.10, which pins botocore 1.43,
older than the botocore 1.44 that the pinned boto3 (requirements/jobs.txt) needs; one S3
client serves both the model and the data export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sheepdog.export.config import ExportError


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ("bucket", "a/b"); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ExportError(f"{url}: not an s3:// URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ExportError(f"{url}: no bucket")
    return bucket, prefix.strip("/")


def key_of(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def client():
    """A boto3 S3 client from boto3's own credential chain."""
    try:
        import boto3
    except ImportError:
        raise ExportError("uploading to s3:// needs boto3 (pip install 'sheepdog[s3]')") from None
    # endpoint_url given explicitly too: boto3 releases before AWS_ENDPOINT_URL support ignore it
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def upload_folder(folder: Path, files: list[Path], url: str, last: str) -> int:
    """Every file of `folder` (relative paths), `last` after all the others: its presence
    means the upload is whole. Returns the bytes uploaded."""
    bucket, prefix = split_url(url)
    s3 = client()
    size = 0
    for rel in sorted(files, key=lambda f: f.as_posix() == last):
        s3.upload_file(str(folder / rel), bucket, key_of(prefix, rel.as_posix()))
        size += (folder / rel).stat().st_size
    return size


def upload(model_dir: Path, files: list[Path], card: str, info: dict[str, Any], url: str) -> int:
    """The model's files, then README.md, then export.json last (its presence means the upload
    is whole). Returns the bytes of the model files."""
    from sheepdog.export.write import CARD, MARKER

    bucket, prefix = split_url(url)
    s3 = client()
    size = 0
    for rel in files:
        s3.upload_file(str(model_dir / rel), bucket, key_of(prefix, rel.as_posix()))
        size += (model_dir / rel).stat().st_size
    s3.put_object(Bucket=bucket, Key=key_of(prefix, CARD), Body=card.encode("utf-8"), ContentType="text/markdown")
    s3.put_object(Bucket=bucket, Key=key_of(prefix, MARKER), Body=(json.dumps(info, indent=2) + "\n").encode(),
                  ContentType="application/json")
    return size

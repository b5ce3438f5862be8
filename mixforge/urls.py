"""Locations at fsspec URLs (s3://, gs://, hf://, ...): sources read from object storage and
exports written to it. Endpoints and credentials come from the standard environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN, ...) or fsspec's
own config, never from the mixforge config: so they never reach a record, a manifest or a log."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mixforge.errors import ConfigError, MixforgeError

# The packages fsspec needs for the common schemes, named in the error when one is missing.
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub", "az": "adlfs", "abfs": "adlfs"}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(path: str) -> bool:
    """A path with a scheme other than file:// (which is a local path)."""
    m = _SCHEME.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def check_url(url: str, where: str) -> None:
    """ConfigError naming `where` for a URL that carries credentials (user:secret@host) or whose
    scheme fsspec cannot open here (no such protocol, or its package not installed)."""
    if "@" in urlsplit(url).netloc:
        raise ConfigError(f"{where}: {_redacted(url)} holds credentials; put them in the environment (AWS_ACCESS_KEY_ID, "
                          "AWS_SECRET_ACCESS_KEY, ...) or fsspec's config, never in the mixforge config")
    filesystem_class(url, where)


def filesystem_class(url: str, where: str):
    import fsspec

    scheme = _SCHEME.match(url).group(1).lower()
    try:
        return fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise ConfigError(f"{where}: {url}: fsspec knows no protocol {scheme!r}") from None
    except ImportError:
        package = PACKAGES.get(scheme, f"the fsspec package for {scheme}://")
        raise ConfigError(f"{where}: {url}: reading {scheme}:// needs {package}: pip install {package}") from None


def url_filesystem(url: str):
    """(fsspec filesystem, path inside it) for `url`, with a MixforgeError naming the URL when the
    store cannot be reached (no credentials, no such bucket, no endpoint)."""
    from fsspec.core import url_to_fs

    filesystem_class(url, "location")
    try:
        return url_to_fs(url)
    except Exception as e:  # each store raises its own types
        raise MixforgeError(f"cannot open {url}: {type(e).__name__}: {e}") from None


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc="<credentials>@" + parts.netloc.rsplit("@", 1)[-1]).geturl()

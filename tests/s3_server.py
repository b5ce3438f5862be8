"""A real S3-compatible server on 127.0.0.1 for tests: moto's standalone server (`moto[server]`,
as s3fs's own tests use), on a free port, its credentials and endpoint in the environment the
way boto and s3fs read them. Stopped by the caller's finaliser."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from prefect_server import free_port, stop_group

# Dummy credentials: moto accepts any. The secret is checked never to reach a workspace file.
SECRET = "mixforge-test-secret-7f3a"


def start_s3(timeout: float = 60) -> tuple[subprocess.Popen, dict]:
    """(the server's process, the environment variables that point boto/s3fs at it)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc)
                raise RuntimeError(f"moto server on {endpoint} did not start")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1"}
    return proc, env


def upload(local, url: str) -> None:
    """Copy a local file or folder to `url` (s3://bucket/prefix), making the bucket if needed."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(str(local), url, recursive=os.path.isdir(local))

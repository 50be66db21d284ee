"""TLS on the gRPC listener (transport/tls.py): server certificates, client certificates (mTLS), and plaintext
only on loopback unless allowed, with the Python client and the CLI connecting over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client import Client
from moments_client.errors import MomentsError
from tests.live import REPO, Process, _env, free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path.with_suffix(".crt"), path.with_suffix(".key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost signed by it, and a client certificate signed by it."""
    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("moments test CA"))
        .issuer_name(_name("moments test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": _write(d / "ca", ca_key, ca)[0]}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"moments test {role}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if role == "server":
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        out[f"{role}_cert"], out[f"{role}_key"] = _write(d / role, key, builder.sign(ca_key, hashes.SHA256()))
    return out


def start(model_dir: Path, workdir: Path, listen: str, *flags: str) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-m", "moments_server", "--listen", listen, "--model-dir", str(model_dir)]
    args += ["--store", f"embedded:{workdir / 'data'}", "--metrics-listen", "127.0.0.1:0", *flags]
    proc = Process(args, workdir / "server.log")
    deadline = time.monotonic() + 120
    while " serving shapes-demo " not in proc.output():
        assert proc.proc.poll() is None, proc.output()
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.2)
    return proc


def test_mtls_and_the_clients(shapes_model_dir: Path, pki: dict[str, Path], tmp_path: Path) -> None:
    target = f"localhost:{free_port()}"
    tls = ["--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"])]
    server = start(shapes_model_dir, tmp_path / "mtls", target, *tls, "--tls-client-ca", str(pki["ca"]))
    try:
        with Client(target, tls=str(pki["ca"]), client_cert=(pki["client_cert"], pki["client_key"])) as client:
            assert client.info().model.name == "shapes-demo"
        with Client(target, tls=str(pki["ca"]), timeout=5) as no_cert, pytest.raises(MomentsError) as refused:
            no_cert.info()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError) as e:
            pb_grpc.VideoSearchStub(ch).Info(pb.InfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # the CLI, with its certificate from the environment
        env = _env() | {"MOMENTS_CLIENT_CERT": str(pki["client_cert"]), "MOMENTS_CLIENT_KEY": str(pki["client_key"])}
        cli = subprocess.run(
            [sys.executable, "-m", "moments_client.cli", "--target", target, "--ca-cert", str(pki["ca"]), "info"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0 and "shapes-demo" in cli.stdout, cli.stderr
    finally:
        server.stop()


def test_plaintext_only_on_loopback_unless_allowed(shapes_model_dir: Path, tmp_path: Path) -> None:
    listen = f"0.0.0.0:{free_port()}"
    refused = subprocess.run(
        [sys.executable, "-m", "moments_server", "--listen", listen, "--model-dir", str(shapes_model_dir),
         "--store", f"embedded:{tmp_path / 'a'}", "--metrics-listen", "127.0.0.1:0"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"refusing to serve plaintext on {listen} (--listen)" in refused.stderr and "Traceback" not in refused.stderr
    half = subprocess.run(
        [sys.executable, "-m", "moments_server", "--tls-cert", "x.pem", "--model-dir", str(shapes_model_dir)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert half.returncode == 2 and "needs both --tls-cert and --tls-key" in half.stderr
    allowed = start(shapes_model_dir, tmp_path / "b", listen, "--allow-insecure")
    try:
        assert "PLAINTEXT" in allowed.output()
        with Client(f"127.0.0.1:{listen.rsplit(':', 1)[1]}") as client:
            assert client.info().model.name == "shapes-demo"
    finally:
        allowed.stop()

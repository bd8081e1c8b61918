"""Certificates, tokens and kubeconfigs for the test cluster (:mod:`support.kube_cluster`).

Everything is made fresh per cluster with the ``cryptography`` package: a CA, the apiserver's serving
certificate, the apiserver's client certificate for the kubelet, a service-account key pair, one random token
per component (a static token file) and one kubeconfig per component. ECDSA P-256 keys: generating them takes
milliseconds, and every component of Kubernetes 1.20 accepts them.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)
APISERVER_IPS = ("127.0.0.1", "10.0.0.1")  # loopback, and the first address of the service range
APISERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")

# user name, groups: the names the default RBAC bindings (and the Node authorizer) already know.
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("admin", ("system:masters",)),
    "kubelet": ("system:node:localhost", ("system:nodes",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "kube-proxy": ("system:kube-proxy", ()),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the files :func:`make_pki` wrote, and the token of each component (keyed as USERS)."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    sa_key: Path
    sa_pub: Path
    token_file: Path
    tokens: dict[str, str]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _leaf(
    common_name: str,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
    organization: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    builder = _builder(x509.Name(attrs), ca_name, key)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, certificates, service-account keys and a token file into ``directory``.

    Args:
        directory: An existing, private directory.

    Returns:
        The paths written and the tokens.
    """
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vintage-test-cluster-ca")])
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in APISERVER_IPS]
    sans += [x509.DNSName(name) for name in APISERVER_NAMES]
    server, server_key = _leaf("kube-apiserver", ca_name, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client, client_key = _leaf(
        "kube-apiserver-kubelet-client",
        ca_name,
        ca_key,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        organization="system:masters",
    )
    sa_key = _key()

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        apiserver_cert=directory / "apiserver.crt",
        apiserver_key=directory / "apiserver.key",
        kubelet_client_cert=directory / "apiserver-kubelet-client.crt",
        kubelet_client_key=directory / "apiserver-kubelet-client.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        token_file=directory / "tokens.csv",
        tokens={name: secrets.token_hex(24) for name in USERS},
    )
    _write_cert(pki.ca_cert, ca)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.apiserver_cert, server)
    _write_key(pki.apiserver_key, server_key)
    _write_cert(pki.kubelet_client_cert, client)
    _write_key(pki.kubelet_client_key, client_key)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    lines = []
    for i, (name, (user, groups)) in enumerate(USERS.items()):
        lines.append(f'{pki.tokens[name]},{user},uid-{i},"{",".join(groups)}"')
    pki.token_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pki.token_file.chmod(0o600)
    return pki


def write_kubeconfig(path: Path, server: str, ca_cert: Path, token: str) -> Path:
    """Write a kubeconfig with one cluster, one token user and one current context; return ``path``."""
    text = (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: vintage-test\n  cluster:\n    server: {server}\n"
        f"    certificate-authority: {ca_cert}\n"
        f"users:\n- name: user\n  user:\n    token: {token}\n"
        "contexts:\n- name: vintage-test\n  context:\n    cluster: vintage-test\n    user: user\n"
        "current-context: vintage-test\n"
    )
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path

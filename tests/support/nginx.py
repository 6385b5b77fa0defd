"""Debian's nginx for tests: a self-signed certificate, and deploy/nginx/appliance.conf run on free loopback
ports in front of a test server, as an unprivileged foreground process with every file in a test folder."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

SHIPPED_CONF = ROOT / "deploy" / "nginx" / "appliance.conf"


def nginx_binary() -> str | None:
    """nginx on PATH, or Debian's /usr/sbin/nginx (not on a non-root user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def self_signed(folder: Path, dns_names: list[str], ip_addresses: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate (its own trust anchor) and its key, as tls.crt and tls.key in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    crt, pem = folder / "tls.crt", folder / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{SHIPPED_CONF.name} no longer holds exactly one {old!r}"
    return text.replace(old, new)


def shipped_conf(upstream: str, https_port: int, http_port: int, tls_dir: Path) -> str:
    """deploy/nginx/appliance.conf with only its ports, upstream and certificate folder changed."""
    text = SHIPPED_CONF.read_text()
    text = _replace_once(text, "server appliance:7860;", f"server {upstream};")
    text = _replace_once(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = _replace_once(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    assert text.count("/etc/nginx/tls/") == 2
    return text.replace("/etc/nginx/tls/", f"{tls_dir}/")


@dataclass
class Nginx:
    pid: int
    folder: Path

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")


@contextlib.contextmanager
def nginx(site_conf: str, folder: Path, ports: list[int], timeout: float = 30) -> Iterator[Nginx]:
    """nginx (a master and one worker, in the foreground) serving `site_conf` (an http-context file) until
    the block ends; ready once every port in `ports` accepts connections."""
    binary = nginx_binary()
    assert binary is not None, "nginx is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.conf").write_text(site_conf)
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n    include {folder / 'site.conf'};\n}}\n")
    args = [binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    with (folder / "stderr.log").open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            waiting = list(ports)
            while waiting:
                if proc.poll() is not None:
                    raise RuntimeError(f"nginx exited with {proc.returncode}:\n"
                                       f"{(folder / 'error.log').read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx not listening on {waiting}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", waiting[0])) == 0:
                        waiting.pop(0)
                        continue
                time.sleep(0.05)
            yield Nginx(proc.pid, folder)
        finally:
            proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

"""Key files: created 0600, never overwritten, refused when others can read them or they are wrong."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.errors import KeyFileError
from device.protocol.keys import load_device_key, load_recipient_key, write_private_key


def palm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_keys_init_show_and_recipient(tmp_path: Path) -> None:
    r = palm("keys", "init", "--out", "dev.pem", "--device-id", "lane-9", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "dev.pem").stat().st_mode) == 0o600
    assert (tmp_path / "dev.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    pub = r.stdout.splitlines()[1].split(": ")[1]
    assert f"lane-9={pub}" in r.stdout
    shown = palm("keys", "show", "dev.pem", cwd=tmp_path)
    assert shown.stdout.strip() == f"public key: {pub}"
    again = palm("keys", "init", "--out", "dev.pem", cwd=tmp_path)
    assert again.returncode == 78 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    rec = palm("keys", "recipient", "--out", "cloud.pem", cwd=tmp_path)
    assert rec.returncode == 0
    assert stat.S_IMODE((tmp_path / "cloud.pem").stat().st_mode) == 0o600
    pub_b64 = (tmp_path / "cloud.pem.pub").read_text().strip()
    assert f'recipient_public_key = "{pub_b64}"' in rec.stdout
    load_recipient_key(tmp_path / "cloud.pem")


def test_key_files_from_standard_tools_work(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    for alg, loader in (("ed25519", load_device_key), ("x25519", load_recipient_key)):
        path = tmp_path / f"{alg}.pem"
        subprocess.run(
            [openssl, "genpkey", "-algorithm", alg, "-out", str(path)], check=True, capture_output=True
        )
        path.chmod(0o600)
        loader(path)


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    write_private_key(key, Ed25519PrivateKey.generate())
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"can be read by others \(mode 0640\).*chmod 600"):
        load_device_key(key)
    key.chmod(0o600)
    load_device_key(key)
    with pytest.raises(KeyFileError, match="must be X25519"):
        load_recipient_key(key)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_device_key(tmp_path / "none.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"not a PEM private key.*PKCS#8"):
        load_device_key(junk)
    ecdsa = tmp_path / "ec.pem"
    ecdsa.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ecdsa.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"holds an EC key: expected Ed25519"):
        load_device_key(ecdsa)
    enc = tmp_path / "enc.pem"
    enc.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    enc.chmod(0o600)
    with pytest.raises(KeyFileError, match="encrypted"):
        load_device_key(enc)
    with pytest.raises(KeyFileError, match="never overwritten"):
        write_private_key(key, Ed25519PrivateKey.generate())


def test_send_test_refuses_a_readable_key_without_a_traceback(tmp_path: Path) -> None:
    from tests.conftest import EXAMPLE_CONFIG

    key = tmp_path / "dev.pem"
    write_private_key(key, Ed25519PrivateKey.generate())
    key.chmod(0o644)
    cfg = tmp_path / "c.toml"
    cfg.write_text(EXAMPLE_CONFIG.read_text().replace('"/var/lib/palm-scanner/device-key.pem"', '"dev.pem"'))
    r = palm("send-test", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 78
    assert r.stderr.strip() == (
        f"palm send-test: device key '{key}' can be read by others (mode 0644): "
        f"make it mode 0600 with `chmod 600 {key}`"
    )

"""Key files: created 0600, never overwritten, refused when others can read them or they are wrong."""

from __future__ import annotations

import base64
import re
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
    assert shown.stdout.splitlines() == ["device key: Ed25519", f"public key: {pub}"]
    again = palm("keys", "init", "--out", "dev.pem", cwd=tmp_path)
    assert again.returncode == 78 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    for suite, flag, size in (
        ("XWING-SHA256-AES256GCM", [], 1216),
        ("X25519-SHA256-AES256GCM", ["--suite", "x25519"], 32),
    ):
        name = f"cloud-{size}.pem"
        rec = palm("keys", "recipient", "--out", name, *flag, cwd=tmp_path)
        assert rec.returncode == 0, rec.stderr
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        pub_b64 = (tmp_path / f"{name}.pub").read_text().strip()
        assert len(base64.b64decode(pub_b64)) == size and f"({suite}," in rec.stdout
        assert f'recipient_public_key = "{pub_b64}"' in rec.stdout
        key = load_recipient_key(tmp_path / name)
        assert key.suite == suite and base64.b64encode(key.public_raw).decode() == pub_b64
        # show: the private file and PATH.pub give the same suite, kid and key
        for shown_file in (name, f"{name}.pub"):
            shown = palm("keys", "show", shown_file, cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert f"{suite}, kid {key.kid}" in shown.stdout and f"public key: {pub_b64}" in shown.stdout


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
    with pytest.raises(KeyFileError, match="is X25519 or X-Wing"):
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


def test_a_public_key_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    """The review's case: cloud.pem.pub a symlink to another file, which was overwritten."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "cloud.pem.pub").symlink_to(victim)
    r = palm("keys", "recipient", "--out", "cloud.pem", cwd=tmp_path)
    assert r.returncode == 78 and "cloud.pem.pub' already exists" in r.stderr and "Traceback" not in r.stderr
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "cloud.pem").exists()  # never a private half without its public half
    (tmp_path / "dev.pem").symlink_to(tmp_path / "nowhere.pem")  # dangling: still a name taken
    r = palm("keys", "init", "--out", "dev.pem", cwd=tmp_path)
    assert r.returncode == 78 and "never overwritten" in r.stderr
    assert not (tmp_path / "nowhere.pem").exists()


#: run `palm keys init` with files limited to 100 bytes: the write fails part-way (EFBIG)
_SHORT_WRITE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
from device import cli
sys.exit(cli.main(["keys", "init", "--out", "dev.pem"]))
"""


def test_a_key_that_cannot_be_written_whole_leaves_no_file(tmp_path: Path) -> None:
    """The review's case: the write's result was not checked, so a short write (a full disk, a
    power cut) left a truncated key that was never made again."""
    r = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert r.returncode == 78, r.stdout + r.stderr
    assert "cannot write 'dev.pem'" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the key nor a temporary file
    ok = palm("keys", "init", "--out", "dev.pem", cwd=tmp_path)  # and it can be made afterwards
    assert ok.returncode == 0 and load_device_key(tmp_path / "dev.pem")


def test_a_key_is_fsynced_and_linked_into_place(tmp_path: Path) -> None:
    """strace of `palm keys init`: the new file is fsynced before it gets its name (by link, which
    never replaces), and the folder after, so a power cut leaves the whole key or none."""
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed: .ci/run installs it (apt-get install strace)")
    log = tmp_path / "strace.log"
    work = tmp_path / "w"
    work.mkdir()
    trace = ["strace", "-f", "-qq", "-y", "-o", str(log), "-e", "trace=fsync,link,linkat,rename,renameat2"]
    r = subprocess.run(
        [*trace, sys.executable, "-m", "device", "keys", "init", "--out", "dev.pem"],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    calls = [line.split(None, 1)[1] for line in log.read_text().splitlines() if " " in line]
    i_file = next(i for i, c in enumerate(calls) if c.startswith("fsync(") and ".dev.pem." in c)
    i_link = next(i for i, c in enumerate(calls) if c.startswith(("link(", "linkat(")) and '"dev.pem"' in c)
    i_dir = next(i for i, c in enumerate(calls) if c.startswith("fsync(") and f"<{work}>" in c)
    assert i_file < i_link < i_dir, calls
    assert not any(c.startswith(("rename", "renameat2")) for c in calls)
    assert sorted(p.name for p in work.iterdir()) == ["dev.pem"]


@pytest.mark.parametrize(
    "raw_hex",
    [
        "00" * 32,  # zero
        "01" + "00" * 31,  # one
        # points of order 8, RFC 7748 / the list in libsodium's crypto_scalarmult/curve25519
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1
    ],
)
def test_a_recipient_key_of_small_order_is_refused_at_load(tmp_path: Path, raw_hex: str) -> None:
    import base64

    from device.errors import ConfigError
    from device.protocol.keys import recipient_public
    from tests.conftest import EXAMPLE_CONFIG

    raw = bytes.fromhex(raw_hex)
    with pytest.raises(KeyFileError, match="small order"):
        recipient_public(raw)
    text = EXAMPLE_CONFIG.read_text()
    good = re.search(r'(?m)^recipient_public_key = "(.*)"', text)
    assert good
    cfg = tmp_path / "scanner.toml"
    cfg.write_text(text.replace(good.group(1), base64.b64encode(raw).decode()))
    from device.config import load_config

    with pytest.raises(ConfigError, match=r"recipient_public_key = .* small order"):
        load_config(cfg)
    r = palm("send-test", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 78 and "small order" in r.stderr and "Traceback" not in r.stderr

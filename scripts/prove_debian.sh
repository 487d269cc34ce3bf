#!/usr/bin/env bash
# Prove the install and the unit on a real Debian root, not on paper (called by .ci/run).
#
#   sudo scripts/prove_debian.sh SUITE [WORKDIR]      SUITE: bookworm or trixie
#
# 1. mmdebstrap builds a minimal SUITE root (systemd as init, python3) from Debian's archive.
# 2. scripts/install.sh runs inside it (systemd-nspawn, no boot): everything but picamera2 and
#    the other Raspberry Pi-only packages, which it names. The venv must use apt's numpy and
#    OpenCV; `palm selftest --simulate` and a short `palm run --simulate` must pass there.
# 3. The root boots under its own systemd (systemd-nspawn -b). palmd.service, as installed, runs
#    the simulated scanner through a drop-in, with lgpio imported for real under the unit's
#    sandbox first; a probe unit checks READY=1, watchdog pings, JSON lines in the journal,
#    /healthz, /tmp in RAM, a clean stop and no file the service wrote outside its runtime
#    directory, then powers the container off. This script checks the probe's report.
# Needs root, mmdebstrap and systemd-container; the network to Debian's archive and PyPI.
set -euo pipefail

SUITE="${1:?usage: prove_debian.sh bookworm|trixie [WORKDIR]}"
WORK="${2:-/var/tmp/palm-prove}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
ROOTFS="$WORK/$SUITE"
OUT="$WORK/$SUITE-out"
case "$SUITE" in bookworm | trixie) ;; *)
    echo "prove_debian.sh: suite $SUITE is not bookworm or trixie" >&2
    exit 2
    ;;
esac
for tool in mmdebstrap systemd-nspawn; do
    command -v "$tool" >/dev/null || {
        echo "prove_debian.sh: $tool is missing (apt-get install mmdebstrap systemd-container)" >&2
        exit 2
    }
done

t0=$SECONDS
lap() { printf '   [%s] %s: %d s\n' "$SUITE" "$1" $((SECONDS - t0)); t0=$SECONDS; }
# The host's trust store, so that pip in the root trusts what the host trusts (a CI network
# may reach PyPI through a proxy with a CA of its own). Verification stays on.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
nspawn() { systemd-nspawn -q --register=no --keep-unit --resolv-conf=replace-host --timezone=off --bind-ro="$CA_BUNDLE" -D "$ROOTFS" "$@"; }

rm -rf "$ROOTFS" "$OUT"
mkdir -p "$WORK" "$OUT"
echo "== $SUITE: a minimal root from Debian's archive"
mmdebstrap --quiet --variant=apt --include=systemd,systemd-sysv,dbus,python3,ca-certificates \
    "$SUITE" "$ROOTFS"
lap "mmdebstrap"

echo "== $SUITE: scripts/install.sh inside it"
install -d "$ROOTFS/usr/src/palm-scanner"
# The files of this checkout that git knows or would add (the work tree as it is).
git -C "$SRC" ls-files -z --cached --others --exclude-standard |
    tar -C "$SRC" --null -T - -cf - | tar -C "$ROOTFS/usr/src/palm-scanner" -xf -
# lgpio is in Raspberry Pi's archive (python3-lgpio) but not Debian's. PyPI has wheels for
# CPython 3.11 (Bookworm's) and none for Trixie's 3.13: there pip builds PyPI's source, which
# with PYPI=1 links lg's C library in statically. A Pi takes apt's; only this stand-in compiles.
build_env=()
if [[ "$SUITE" != bookworm ]]; then
    nspawn apt-get update -qq
    nspawn env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        swig gcc libc6-dev python3-dev python3-setuptools >"$OUT/build-tools.log"
    build_env=(--setenv=PYPI=1)
fi
nspawn --setenv=PIP_DISABLE_PIP_VERSION_CHECK=1 "${build_env[@]}" \
    /usr/src/palm-scanner/scripts/install.sh --device-id "ci-$SUITE" | tee "$OUT/install.log"
grep -q "python3-picamera2: not in this system's apt archive" "$OUT/install.log"
grep -q "no picamera2: this system can run the simulated scanner" "$OUT/install.log"
lap "install.sh"

echo "== $SUITE: the venv uses apt's numpy and OpenCV"
nspawn /opt/palm-scanner/venv/bin/python -c '
import cv2, numpy, sys
for m in (numpy, cv2):
    print(f"   {m.__name__} {m.__version__} from {m.__file__}")
    if not m.__file__.startswith("/usr/lib/python3/dist-packages/"):
        sys.exit(f"{m.__name__} is not apt'"'"'s")
' | tee "$OUT/venv.log"
# Every requirement met by what the venv imports (apt's cv2 has no pip metadata: pip check
# would call it missing).
# (nspawn merges the container's stderr into stdout: the redirect is made inside)
nspawn /bin/sh -c '/opt/palm-scanner/venv/bin/python -m device.deps 2>/dev/null' >"$OUT/deps-missing.txt"
[[ ! -s "$OUT/deps-missing.txt" ]] || {
    echo "still missing after the install: $(paste -sd' ' "$OUT/deps-missing.txt")" >&2
    exit 1
}
nspawn --chdir=/var/tmp /opt/palm-scanner/venv/bin/palm selftest --simulate | tee "$OUT/selftest.log"
nspawn --chdir=/var/tmp /opt/palm-scanner/venv/bin/palm run --simulate --scans 3 | tee "$OUT/run.log"
lap "selftest and run in the root"

echo "== $SUITE: palmd.service under the root's own systemd"
dropin="$ROOTFS/etc/systemd/system/palmd.service.d"
install -d "$dropin"
cat >"$dropin/ci-simulate.conf" <<'UNIT'
# CI only: the simulated scanner in the unit as installed; lgpio imported for real first,
# under the same sandbox (ProtectSystem=strict, WorkingDirectory=, LG_WD=).
[Service]
ExecStartPre=/opt/palm-scanner/venv/bin/python -c "from device.hardware.gpio import import_lgpio; import_lgpio(); print('lgpio imported')"
ExecStart=
ExecStart=/opt/palm-scanner/venv/bin/palm run --simulate --json --scans 60 --config /etc/palm-scanner/config.toml --status-port 9464
UNIT
install -D -m 0755 "$SRC/scripts/unit_probe.py" "$ROOTFS/usr/local/lib/palm-ci/unit_probe.py"
cat >"$ROOTFS/etc/systemd/system/palm-ci-probe.service" <<'UNIT'
[Unit]
Description=CI: check palmd.service, then power off
After=palmd.service
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/lib/palm-ci/unit_probe.py /ci-out/report.json
ExecStopPost=/usr/bin/systemctl --no-block poweroff
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
nspawn systemctl enable palm-ci-probe.service
touch "$OUT/stamp"
timeout 300 systemd-nspawn -q --register=no --keep-unit --resolv-conf=replace-host --timezone=off --bind-ro="$CA_BUNDLE" -D "$ROOTFS" \
    --bind="$OUT:/ci-out" -b >"$OUT/boot.log" 2>&1 || {
    echo "the booted root did not power off cleanly (boot.log follows)" >&2
    tail -50 "$OUT/boot.log" >&2
    exit 1
}
lap "boot, probe, poweroff"
python3 "$SRC/scripts/unit_probe.py" --check "$OUT/report.json"

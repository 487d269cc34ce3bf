#!/usr/bin/env bash
# Install palm-scanner on a Raspberry Pi running 64-bit Raspberry Pi OS (Bookworm or newer).
#
#   sudo scripts/install.sh [--dry-run] [--image] [--device-id ID]
#
# Idempotent: run it again after an update and it changes only what differs; it never
# overwrites the config or the device key. --dry-run prints every step (lines starting
# with "+ ") and does none of them. --image is for an image builder's chroot (the
# pi-gen stage in pi-gen/): no key is made (each scanner makes its own on first boot),
# and nothing of the running system is touched. --root DIR, with --dry-run only, plans
# as if DIR were / (to check the plan against a prepared tree).
set -euo pipefail

DRY=0
IMAGE=0
ROOT=""
DEVICE_ID="${PALM_DEVICE_ID:-}"
while (($#)); do
    case "$1" in
    --dry-run) DRY=1 ;;
    --image) IMAGE=1 ;;
    --root)
        ROOT="${2:?--root needs a directory}"
        shift
        ;;
    --device-id)
        DEVICE_ID="${2:?--device-id needs an id}"
        shift
        ;;
    -h | --help)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "install.sh: unknown option $1 (valid: --dry-run, --image, --device-id ID, --root DIR)" >&2
        exit 2
        ;;
    esac
    shift
done
if [[ -n "$ROOT" ]] && ((!DRY)); then
    echo "install.sh: --root only plans (with --dry-run); to build an image use --image in its chroot" >&2
    exit 2
fi

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="$ROOT/opt/palm-scanner"
ETC="$ROOT/etc/palm-scanner"
STATE="$ROOT/var/lib/palm-scanner"
KEY="$STATE/device-key.pem"
UNIT_DIR="$ROOT/etc/systemd/system"
SYSUSERS="$ROOT/usr/lib/sysusers.d/palm-scanner.conf"
TMPFILES="$ROOT/usr/lib/tmpfiles.d/palm-scanner.conf"
APT_PACKAGES=(python3-picamera2 python3-venv python3-pip python3-lgpio)
DEVICE_ID="${DEVICE_ID:-$(hostname -s 2>/dev/null || echo scanner)}"

step() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
# Print the command; run it unless this is a dry run.
run() {
    printf '+ %s\n' "$*"
    if ((!DRY)); then "$@"; fi
}
# The service group's id as the installed system knows it (an image's own /etc/group).
palm_gid() {
    local gid
    gid="$(awk -F: '$1 == "palm" { print $3 }' "$ROOT/etc/group" 2>/dev/null || true)"
    echo "${gid:-palm}"
}

step "1/8 system: 64-bit Raspberry Pi OS, Bookworm or newer"
codename="$(. "$ROOT/etc/os-release" 2>/dev/null && echo "${VERSION_CODENAME:-}")" || codename=""
arch="$(uname -m)"
case "$codename" in
bookworm | trixie | forky) note "Debian $codename" ;;
*) note "this is not Bookworm or newer (${codename:-unknown}): the install is planned for one" ;;
esac
if [[ "$arch" != aarch64 ]] && ((!IMAGE)); then
    note "this machine is $arch, not aarch64: the scanner needs 64-bit Raspberry Pi OS"
fi
if ((!DRY)) && ((EUID != 0)); then
    echo "install.sh: run as root (sudo), or with --dry-run to see the plan" >&2
    exit 1
fi

step "2/8 packages from apt: the camera stack and the GPIO library"
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"

step "3/8 the package in a virtual environment that sees apt's picamera2"
if [[ -x "$PREFIX/venv/bin/python" ]]; then
    note "$PREFIX/venv exists: kept"
else
    run python3 -m venv --system-site-packages "$PREFIX/venv"
fi
run "$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$SRC[pi]"
run install -D -m 0644 "$SRC/README.md" "$PREFIX/README.md"

step "4/8 the service user and its directories (sysusers.d, tmpfiles.d)"
run install -D -m 0644 "$SRC/systemd/palm-scanner.sysusers.conf" "$SYSUSERS"
run install -D -m 0644 "$SRC/systemd/palm-scanner.tmpfiles.conf" "$TMPFILES"
run systemd-sysusers palm-scanner.conf
run systemd-tmpfiles --create palm-scanner.conf

step "5/8 the config (never overwritten)"
if [[ -e "$ETC/config.toml" ]]; then
    note "$ETC/config.toml exists: kept"
else
    run install -m 0640 -o 0 -g "$(palm_gid)" "$SRC/config.example.toml" "$ETC/config.toml"
    note "edit [device] id, [cloud] endpoint and recipient_public_key in $ETC/config.toml"
fi

step "6/8 the device key (created once, never overwritten)"
run install -D -m 0644 "$SRC/systemd/palm-firstboot.service" "$UNIT_DIR/palm-firstboot.service"
if [[ -e "$KEY" ]]; then
    note "$KEY exists: kept"
elif ((IMAGE)); then
    # An image for many scanners carries no key: each makes its own on first boot.
    note "no key in an image: palm-firstboot.service makes this scanner's own on its first boot"
else
    # Made by the service user, so only it can read the key; its public key is printed
    # with the line that registers the scanner with the cloud.
    run runuser -u palm -- "$PREFIX/venv/bin/palm" keys init --out "$KEY" --device-id "$DEVICE_ID"
fi
run systemctl enable palm-firstboot.service

step "7/8 the systemd unit, enabled"
run install -D -m 0644 "$SRC/systemd/palmd.service" "$UNIT_DIR/palmd.service"
if ((!IMAGE)); then
    run systemctl daemon-reload
fi
run systemctl enable palmd.service

step "8/8 swap off: a frame must never be paged to disk"
if ((IMAGE)); then
    note "an image: its swap service masked, so no scanner made from it swaps"
    run systemctl mask dphys-swapfile.service
elif swapon --noheadings --show=NAME 2>/dev/null | grep -q .; then
    note "swap is on ($(swapon --noheadings --show=NAME | paste -sd, -)): turning it off for good;"
    note "the daemon refuses to run with swap on"
    run swapoff -a
    run systemctl disable --now dphys-swapfile.service
else
    note "swap is off"
    run systemctl mask dphys-swapfile.service
fi

step "done"
note "next: edit $ETC/config.toml, register the key printed above, then"
note "  $PREFIX/venv/bin/palm selftest --config $ETC/config.toml"
note "  systemctl start palmd.service"

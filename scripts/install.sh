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
# Debian's own: the venv, and the numpy and OpenCV that picamera2's apt packages are built
# against (the venv must use these, not PyPI's). Raspberry Pi's archive only: the camera
# stack, lgpio, the RPi.GPIO module on lgpio, and gpiozero built for Raspberry Pi OS.
APT_PACKAGES=(python3-venv python3-pip python3-numpy python3-opencv python3-requests)
PI_APT_PACKAGES=(python3-picamera2 python3-lgpio python3-rpi-lgpio python3-gpiozero)
BOOT_CONFIG="$ROOT/boot/firmware/config.txt"
RPI_SWAP_CONF="$ROOT/etc/rpi/swap.conf.d/90-palm-scanner.conf"
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

step "1/9 system: 64-bit Raspberry Pi OS, Bookworm or newer"
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

# Whether apt can install a package here (its archive has it).
apt_has() {
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
    [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

step "2/9 packages from apt: the camera stack, the GPIO library, numpy and OpenCV"
run apt-get update -qq
pi_found=()
if ((DRY)); then
    pi_found=("${PI_APT_PACKAGES[@]}")
else
    for pkg in "${PI_APT_PACKAGES[@]}"; do
        if apt_has "$pkg"; then
            pi_found+=("$pkg")
        else
            note "$pkg: not in this system's apt archive (only Raspberry Pi's has it)"
        fi
    done
fi
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${APT_PACKAGES[@]}" ${pi_found[@]+"${pi_found[@]}"}
if [[ " ${pi_found[*]-} " != *" python3-picamera2 "* ]]; then
    note "no picamera2: this system can run the simulated scanner (palm run --simulate), not a camera"
fi

step "3/9 the package in a virtual environment that uses apt's numpy, OpenCV and picamera2"
VENV="$PREFIX/venv"
if [[ -x "$VENV/bin/python" ]]; then
    note "$VENV exists: kept"
    # An older install put PyPI's numpy, OpenCV and RPi.GPIO in the venv, over apt's.
    shadows=("$VENV"/lib/python3*/site-packages/{numpy,opencv_python_headless,RPi.GPIO}-*.dist-info)
    for dist in "${shadows[@]}"; do
        [[ -e "$dist" ]] || continue
        name="$(basename "$dist")"
        run "$VENV/bin/python" -m pip uninstall --quiet --yes "${name%%-*}"
    done
else
    run python3 -m venv --system-site-packages "$VENV"
fi
# Without its dependencies first: pip would bring PyPI's OpenCV and numpy 2 over apt's
# (device/deps.py says why). Then only what apt did not give, with apt's versions pinned.
run "$VENV/bin/python" -m pip install --quiet --upgrade --no-deps "$SRC"
CONSTRAINTS="$PREFIX/apt-pins.txt"
if ((DRY)); then
    run "$VENV/bin/python" -m device.deps --constraints "$CONSTRAINTS"
    run "$VENV/bin/python" -m pip install --quiet --constraint "$CONSTRAINTS" "<what device.deps printed>"
else
    printf '+ %s\n' "$VENV/bin/python -m device.deps --constraints $CONSTRAINTS"
    # Not a process substitution: set -e must see device.deps fail.
    wanted="$("$VENV/bin/python" -m device.deps --constraints "$CONSTRAINTS")"
    missing=()
    [[ -z "$wanted" ]] || mapfile -t missing <<<"$wanted"
    if ((${#missing[@]})); then
        run "$VENV/bin/python" -m pip install --quiet --constraint "$CONSTRAINTS" "${missing[@]}"
        note "(pip may say opencv-python-headless is not installed: apt's python3-opencv is the cv2 used)"
    else
        note "apt gave every dependency"
    fi
fi
run install -D -m 0644 "$SRC/README.md" "$PREFIX/README.md"

step "4/9 the service user and its directories (sysusers.d, tmpfiles.d)"
run install -D -m 0644 "$SRC/systemd/palm-scanner.sysusers.conf" "$SYSUSERS"
run install -D -m 0644 "$SRC/systemd/palm-scanner.tmpfiles.conf" "$TMPFILES"
run systemd-sysusers palm-scanner.conf
run systemd-tmpfiles --create palm-scanner.conf

step "5/9 the config (never overwritten)"
if [[ -e "$ETC/config.toml" ]]; then
    note "$ETC/config.toml exists: kept"
else
    run install -m 0640 -o 0 -g "$(palm_gid)" "$SRC/config.example.toml" "$ETC/config.toml"
    note "edit [device] id, [cloud] endpoint and recipient_public_key in $ETC/config.toml"
fi

step "6/9 the device key (created once, never overwritten)"
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

step "7/9 the systemd unit, enabled"
run install -D -m 0644 "$SRC/systemd/palmd.service" "$UNIT_DIR/palmd.service"
# the clock's wait the unit wants, bounded (see the file)
run install -D -m 0644 "$SRC/systemd/palm-time-wait-sync.conf" \
    "$UNIT_DIR/systemd-time-wait-sync.service.d/palm-scanner.conf"
if ((!IMAGE)) && [[ -d /run/systemd/system ]]; then
    run systemctl daemon-reload
elif ((!IMAGE)); then
    note "systemd is not running here (a chroot or a container): it reads the unit when it starts"
fi
run systemctl enable palmd.service

step "8/9 swap off: a frame must never be paged to disk"
# Bookworm swaps to a file through dphys-swapfile; Trixie through rpi-swap, to zram and a
# file (its generator reads /etc/rpi/swap.conf.d/). Both are stopped for good.
run install -D -m 0644 /dev/stdin "$RPI_SWAP_CONF" <<'SWAP'
# palm-scanner: no swap of any kind (a frame must never leave RAM). See swap.conf(5).
[Main]
Mechanism=none
SWAP
if ((IMAGE)); then
    note "an image: its swap services masked, so no scanner made from it swaps"
elif swapon --noheadings --show=NAME 2>/dev/null | grep -q .; then
    note "swap is on ($(swapon --noheadings --show=NAME | paste -sd, -)): turning it off for good;"
    note "the daemon refuses to run with swap on"
    run swapoff -a
else
    note "swap is off"
fi
run systemctl mask dphys-swapfile.service dev-zram0.swap systemd-zram-setup@zram0.service

step "9/9 GPIO outputs released to inputs (dtparam=strict_gpiod)"
# Raspberry Pi kernels keep a released output driven (raspberrypi/linux 6117): a daemon killed
# mid-flood would leave the ring lit. strict_gpiod returns released lines to inputs; the
# ring's gate pull-downs then hold it dark. It takes effect at the next boot.
if [[ -f "$BOOT_CONFIG" ]] && grep -qx 'dtparam=strict_gpiod' "$BOOT_CONFIG"; then
    note "$BOOT_CONFIG has dtparam=strict_gpiod: kept"
elif [[ -f "$BOOT_CONFIG" ]]; then
    printf '+ %s\n' "append dtparam=strict_gpiod to $BOOT_CONFIG"
    if ((!DRY)); then
        # [all]: the file may end inside a conditional section ([cm5], [pi4]...).
        printf '\n[all]\n# palm-scanner: released GPIO lines go back to inputs\ndtparam=strict_gpiod\n' >>"$BOOT_CONFIG"
    fi
    note "takes effect at the next boot"
else
    note "no $BOOT_CONFIG: not a Raspberry Pi (add dtparam=strict_gpiod to its config.txt there)"
fi

step "done"
note "next: edit $ETC/config.toml, register the key printed above, then"
note "  $PREFIX/venv/bin/palm selftest --config $ETC/config.toml"
note "  systemctl start palmd.service"

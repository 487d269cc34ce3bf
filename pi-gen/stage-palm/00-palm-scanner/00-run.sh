#!/bin/bash -e
# On the build host: put this checkout into the image, then run the same install steps
# as on a live scanner, inside the image's chroot, in image mode (no device key: each
# scanner makes its own on first boot with palm-firstboot.service).
SRC="${PALM_SCANNER_SRC:?export PALM_SCANNER_SRC (the palm-scanner checkout) in the pi-gen config}"
install -d "${ROOTFS_DIR}/usr/src/palm-scanner"
tar -C "${SRC}" --exclude=.git --exclude=.venv --exclude='__pycache__' -cf - . |
	tar -C "${ROOTFS_DIR}/usr/src/palm-scanner" -xf -
on_chroot <<'CHROOT'
/usr/src/palm-scanner/scripts/install.sh --image
CHROOT

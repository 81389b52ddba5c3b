SUMMARY = "Initramfs whose /init is the pantavisor-rs daemon"
DESCRIPTION = "The daemon runs as PID 1: it mounts the data partition and starts the revision. \
Nothing else is installed but the trust store (pantavisor-trust): no shell, no init system."
LICENSE = "MIT"

PACKAGE_INSTALL = "pantavisor-rs-init pantavisor-trust"
IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
ROOTFS_BOOTSTRAP_INSTALL = ""
# No kernel, no module packages: the BSP part carries them.
NO_RECOMMENDATIONS = "1"

IMAGE_FSTYPES = "${INITRAMFS_FSTYPES}"
IMAGE_NAME_SUFFIX = ""
IMAGE_ROOTFS_SIZE = "8192"
IMAGE_ROOTFS_EXTRA_SPACE = "0"

inherit image

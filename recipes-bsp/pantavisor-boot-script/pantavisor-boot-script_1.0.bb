SUMMARY = "U-Boot script that boots the kernel of the revision pantavisor names"
DESCRIPTION = "boot.scr for U-Boot boards: reads the daemon's handshake (pv_rev, pv_try) from \
/boot/pv.env on the data partition, tries a revision at most once (recorded in pv-uboot.env on \
the boot partition), loads that revision's kernel, initramfs and device tree from \
trails/REV/.pv/ and passes pv_bootrev=REV, so a BSP update changes the booted kernel. \
pv-boot.env carries the board's kernel command line (PVROOT_UBOOT_BOOTARGS) and data partition \
(PVROOT_UBOOT_DATAPART). Both are deployed for the image's boot partition (IMAGE_BOOT_FILES)."
HOMEPAGE = "https://github.com/meta-pantavisor-rs/meta-pantavisor-rs"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pv-boot.cmd"

S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

DEPENDS = "u-boot-tools-native"

inherit deploy kernel-arch nopackages

# The kernel command line U-Boot passes (the script adds pv_bootrev=REV).
PVROOT_UBOOT_BOOTARGS ?= "console=${@(d.getVar('SERIAL_CONSOLES') or 'ttyS0').split()[0].split(';')[-1]} pv_storage=LABEL=pvdata panic=-1"
# The data partition's number on the boot device (files/wic/pantavisor-uboot.wks.in: 2).
PVROOT_UBOOT_DATAPART ?= "2"

do_configure[noexec] = "1"

do_compile() {
    uboot-mkimage -A ${UBOOT_ARCH} -O linux -T script -C none -n pantavisor \
        -d ${S}/pv-boot.cmd ${B}/boot.scr
    printf 'pv_bootargs=%s\npv_datapart=%s\n' "${PVROOT_UBOOT_BOOTARGS}" "${PVROOT_UBOOT_DATAPART}" \
        > ${B}/pv-boot.env
}

do_deploy() {
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
    install -m 0644 ${B}/pv-boot.env ${DEPLOYDIR}/pv-boot.env
}
addtask deploy after do_compile before do_build

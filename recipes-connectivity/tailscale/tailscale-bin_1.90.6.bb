SUMMARY = "Tailscale client and daemon (upstream static binaries)"
DESCRIPTION = "tailscale and tailscaled as published by Tailscale for Linux. No Yocto layer of \
the supported releases builds tailscale from source (it needs a newer Go than scarthgap's), \
so this recipe installs the release binaries, checked against their sha256."
HOMEPAGE = "https://tailscale.com/"
LICENSE = "BSD-3-Clause"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/BSD-3-Clause;md5=550794465ba0ec5312d6919e203a55f9"

TAILSCALE_ARCH = "unsupported"
TAILSCALE_ARCH:aarch64 = "arm64"
TAILSCALE_ARCH:x86-64 = "amd64"
COMPATIBLE_HOST = "(aarch64|x86_64).*-linux"

SRC_URI = ""
SRC_URI:aarch64 = "https://pkgs.tailscale.com/stable/tailscale_${PV}_arm64.tgz;name=arm64"
SRC_URI:x86-64 = "https://pkgs.tailscale.com/stable/tailscale_${PV}_amd64.tgz;name=amd64"
SRC_URI[arm64.sha256sum] = "9792d1ded9d119b04c32c7e77475f89bcba57db14ba602ec2714c84ca9786608"
SRC_URI[amd64.sha256sum] = "cc51b5b6fe86a25e66b2ef037334e799a61d06dc64fabcadfe6e2a7588a2b2c7"

S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}/tailscale_${PV}_${TAILSCALE_ARCH}"

PROVIDES = "tailscale"
RPROVIDES:${PN} = "tailscale"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${sbindir} ${D}${bindir}
    install -m 0755 ${S}/tailscaled ${D}${sbindir}/tailscaled
    install -m 0755 ${S}/tailscale ${D}${bindir}/tailscale
}

# Go binaries, linked statically and stripped upstream.
# nooelint: oelint.vars.insaneskip - prebuilt binaries are stripped by their publisher
INSANE_SKIP:${PN} = "already-stripped"
INHIBIT_PACKAGE_STRIP = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT = "1"

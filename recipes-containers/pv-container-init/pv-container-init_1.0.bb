SUMMARY = "Entry points of the gateway's system containers"
DESCRIPTION = "Small start scripts for containers whose service needs a helper started first \
(connman needs a system D-Bus; tailscale joins the tailnet with a key from the container's config)."
HOMEPAGE = "https://github.com/meta-pantavisor-rs/meta-pantavisor-rs"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://connman-start \
           file://tailscale-start"

S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

inherit allarch

do_install() {
    install -d ${D}${sbindir}
    install -m 0755 ${S}/connman-start ${D}${sbindir}/connman-start
    install -m 0755 ${S}/tailscale-start ${D}${sbindir}/tailscale-start
}

PACKAGES = "${PN}-connman ${PN}-tailscale"
FILES:${PN}-connman = "${sbindir}/connman-start"
FILES:${PN}-tailscale = "${sbindir}/tailscale-start"
RDEPENDS:${PN}-connman = "busybox connman dbus"
RDEPENDS:${PN}-tailscale = "busybox tailscale-bin iptables"

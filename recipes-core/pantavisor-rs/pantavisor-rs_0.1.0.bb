SUMMARY = "Pantavisor-compatible container runtime daemon, in Rust"
DESCRIPTION = "Mounts and starts a revision's containers in group order, drives status goals and \
restart policies, applies over-the-air updates per container and rolls back a revision that \
does not reach its goals. pvcontrol is the client of its control socket."

require pantavisor-rs.inc

PVRS_CRATE = "pantavisor"

# As /init of the initramfs (pantavisor-initramfs).
PACKAGES =+ "${PN}-init"
RDEPENDS:${PN}-init = "${PN}"
FILES:${PN}-init = "/init"

do_install:append() {
    ln -sf ${bindir}/pantavisor ${D}/init
}

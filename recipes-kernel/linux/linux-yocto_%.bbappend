# Kernel options the pantavisor-rs daemon needs (squashfs, overlayfs,
# namespaces, cgroups), merged as a configuration fragment when the distro
# has the "pantavisor" feature (kas/include/base.yml sets it); other builds
# are unchanged.
# nooelint: oelint.vars.noncoreoverride - conditional on DISTRO_FEATURES below
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
# nooelint: oelint.vars.noncoreoverride - conditional on DISTRO_FEATURES
SRC_URI:append = " ${@bb.utils.contains('DISTRO_FEATURES', 'pantavisor', 'file://pantavisor.cfg', '', d)}"

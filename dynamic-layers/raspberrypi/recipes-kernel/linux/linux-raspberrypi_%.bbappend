# Kernel options the pantavisor-rs daemon needs, as for linux-yocto (only with
# the "pantavisor" distro feature).
# nooelint: oelint.vars.noncoreoverride - conditional on DISTRO_FEATURES below
FILESEXTRAPATHS:prepend := "${PANTAVISOR_RS_BASE}/recipes-kernel/linux/files:"
# nooelint: oelint.vars.noncoreoverride - conditional on DISTRO_FEATURES
SRC_URI:append = " ${@bb.utils.contains('DISTRO_FEATURES', 'pantavisor', 'file://pantavisor.cfg', '', d)}"

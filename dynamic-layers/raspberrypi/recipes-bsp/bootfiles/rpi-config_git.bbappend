# With DISTRO_FEATURES "pantavisor" (kas/include/base.yml), the firmware loads
# our initramfs after the kernel (pvroot-image puts it on the boot partition
# as pantavisor.cpio.gz); other builds are unchanged.
# nooelint: oelint.vars.noncoreoverride - conditional on DISTRO_FEATURES
RPI_EXTRA_CONFIG:append = " ${@bb.utils.contains('DISTRO_FEATURES', 'pantavisor', '\ninitramfs pantavisor.cpio.gz followkernel\n', '', d)}"

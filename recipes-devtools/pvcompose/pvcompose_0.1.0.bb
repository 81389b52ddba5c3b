SUMMARY = "Composer of Pantavisor revisions: squashfs parts, pvroots, state validation"
DESCRIPTION = "Packs container root filesystems into reproducible squashfs objects named by \
sha256 and writes the state JSON and storage layout; the pvcontainer and pvroot-image classes \
call it (native)."

require recipes-core/pantavisor-rs/pantavisor-rs.inc

RDEPENDS:${PN} = "squashfs-tools"

BBCLASSEXTEND = "native nativesdk"

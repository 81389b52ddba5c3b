SUMMARY = "pvr: clone a Pantavisor device, update a container, sign and post only what changed"
DESCRIPTION = "A Rust command-line tool compatible with Pantavisor's pvr for repositories, apps, \
signatures and device remotes."

require recipes-core/pantavisor-rs/pantavisor-rs.inc

BBCLASSEXTEND = "native nativesdk"

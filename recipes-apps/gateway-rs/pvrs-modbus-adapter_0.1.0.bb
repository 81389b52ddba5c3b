SUMMARY = "modbus-adapter: Modbus TCP and RTU slaves to MQTT"
DESCRIPTION = "Polls holding and input registers of Modbus TCP slaves and of RTU slaves on \
serial lines per a register map, scales and types the values and publishes them to MQTT, \
with backoff through slave, line and broker outages. modbus-sim, a slave simulator for \
tests, is in the -sim package."

require recipes-core/pantavisor-rs/pantavisor-rs.inc

PVRS_CRATE = "modbus-adapter"

do_install:append() {
    install -d ${D}${sysconfdir}/modbus-adapter
    install -m 0644 ${S}/tools/modbus-adapter/etc/adapter.toml ${D}${sysconfdir}/modbus-adapter/adapter.toml
}

PACKAGES =+ "${PN}-sim"
FILES:${PN}-sim = "${bindir}/modbus-sim"
CONFFILES:${PN} = "${sysconfdir}/modbus-adapter/adapter.toml"

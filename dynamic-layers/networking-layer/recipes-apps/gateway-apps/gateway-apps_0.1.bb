SUMMARY = "Services of the reference gateway's app containers"
DESCRIPTION = "The broker configuration, an S3 exporter, an Azure IoT Hub bridge \
configuration, the LTE modem entry point and an OPC UA server (open62541). The edge-app and \
modbus-adapter are the Rust ones (recipes-apps/gateway-rs)."
HOMEPAGE = "https://github.com/meta-pantavisor-rs/meta-pantavisor-rs"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

DEPENDS = "open62541"

SRC_URI = " \
    file://mosquitto-gateway.conf \
    file://s3-export \
    file://modem-start \
    file://azure-bridge.conf \
    file://opcua-server.c \
"

S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

do_compile() {
    ${CC} ${CFLAGS} ${LDFLAGS} -o ${B}/opcua-server ${S}/opcua-server.c -lopen62541
}

do_install() {
    install -d ${D}${bindir} ${D}${sbindir} ${D}${sysconfdir}/mosquitto/conf.d ${D}${sysconfdir}/mosquitto/azure.d
    install -m 0644 ${S}/mosquitto-gateway.conf ${D}${sysconfdir}/mosquitto/gateway.conf
    install -m 0644 ${S}/azure-bridge.conf ${D}${sysconfdir}/mosquitto/azure-bridge.conf
    install -m 0755 ${S}/s3-export ${D}${bindir}/s3-export
    install -m 0755 ${S}/modem-start ${D}${sbindir}/modem-start
    install -m 0755 ${B}/opcua-server ${D}${bindir}/opcua-server
}

PACKAGES =+ "${PN}-broker ${PN}-s3-export ${PN}-azure-bridge ${PN}-modem ${PN}-opcua"
FILES:${PN}-broker = "${sysconfdir}/mosquitto/gateway.conf ${sysconfdir}/mosquitto/conf.d"
FILES:${PN}-s3-export = "${bindir}/s3-export"
FILES:${PN}-azure-bridge = "${sysconfdir}/mosquitto/azure-bridge.conf ${sysconfdir}/mosquitto/azure.d"
FILES:${PN}-modem = "${sbindir}/modem-start"
FILES:${PN}-opcua = "${bindir}/opcua-server"
RDEPENDS:${PN}-broker = "mosquitto"
RDEPENDS:${PN}-s3-export = "busybox mosquitto-clients curl ca-certificates"
RDEPENDS:${PN}-azure-bridge = "mosquitto ca-certificates"
RDEPENDS:${PN}-modem = "busybox dbus modemmanager"

SUMMARY = "Modbus TCP adapter container: polls slaves and publishes registers to MQTT"
DESCRIPTION = "Polls holding registers of Modbus TCP slaves and publishes them to MQTT; a busybox placeholder until the Rust modbus-adapter lands."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-modbus-adapter"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/bin/modbus-adapter"

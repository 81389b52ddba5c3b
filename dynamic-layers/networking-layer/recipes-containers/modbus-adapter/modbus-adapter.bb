SUMMARY = "Modbus adapter container: polls TCP and RTU slaves and publishes registers to MQTT"
DESCRIPTION = "The Rust modbus-adapter (pvrs-modbus-adapter): polls Modbus TCP slaves and RTU slaves on serial lines per the register map of its _config overlay and publishes the values to MQTT."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "pvrs-modbus-adapter"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/bin/modbus-adapter"

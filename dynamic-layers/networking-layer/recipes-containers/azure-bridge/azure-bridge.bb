SUMMARY = "Bridges the gateway's MQTT topics to Azure IoT Hub (mosquitto bridge)"
DESCRIPTION = "A mosquitto bridge forwarding the gateway broker's edge/# topics to Azure IoT Hub; the connection (hub, device, SAS token) comes from the container's config."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-azure-bridge"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/sbin/mosquitto"
PVCONTAINER_ARGS = "-c /etc/mosquitto/azure-bridge.conf"

SUMMARY = "MQTT broker container (mosquitto) on port 1883"
DESCRIPTION = "mosquitto listening on 1883 for every container, persistence on a permanent volume."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-broker"

PVCONTAINER_GROUP = "platform"
PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/sbin/mosquitto"
PVCONTAINER_ARGS = "-c /etc/mosquitto/gateway.conf"
PVCONTAINER_VOLUMES = "/var/lib/mosquitto:permanent"

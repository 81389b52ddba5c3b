SUMMARY = "LTE modem container: ModemManager on the host network"
DESCRIPTION = "ModemManager with its system D-Bus, for gateways with an LTE modem (SKU wifi-lte)."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-modem"

PVCONTAINER_GROUP = "platform"
PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/sbin/modem-start"

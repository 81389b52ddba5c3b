SUMMARY = "Network container: connman on the host network"
DESCRIPTION = "Brings up Ethernet and Wi-Fi for the gateway. Named after Pantavisor's \
pv-alpine-connman; built here from Yocto's connman."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "pv-container-init-connman connman-client"

PVCONTAINER_GROUP = "root"
PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ROLES = "mgmt"
PVCONTAINER_ENTRYPOINT = "/usr/sbin/connman-start"
PVCONTAINER_VOLUMES = "/var/lib/connman:permanent"

SUMMARY = "OPC UA container (open62541 server on port 4840)"
DESCRIPTION = "An open62541 OPC UA server on port 4840; the adapter mapping MQTT topics to OPC UA variables replaces it when it lands."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-opcua"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/bin/opcua-server"

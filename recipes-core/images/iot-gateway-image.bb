SUMMARY = "Industrial IoT Gateway"
DESCRIPTION = "The data partition of the reference gateway: the BSP of core-image-minimal, the network, VPN, broker and edge-app containers in revision 0, and the Modbus and OPC UA adapters as factory packages."
LICENSE = "MIT"
inherit image pvroot-image
PVROOT_CONTAINERS_CORE ?= "pv-alpine-connman pv-tailscale pv-mqtt-broker edge-app"
PVROOT_CONTAINERS ?= "modbus-adapter opcua-adapter"
PVROOT_IMAGE_BSP ?= "core-image-minimal"

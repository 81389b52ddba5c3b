SUMMARY = "Edge analytics container: aggregates sensor topics and raises alarms"
DESCRIPTION = "Subscribes to the sensor topics, publishes count/min/max/mean per window and raises alarms; a busybox placeholder until the Rust edge-app lands."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-edge-app"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/bin/edge-app"

SUMMARY = "Edge analytics container: aggregates sensor topics and raises alarms"
DESCRIPTION = "The Rust edge-app (pvrs-edge-app): filters sensor topics, publishes count/min/max/mean per window and raises alarms from a rolling z-score or EWMA."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "pvrs-edge-app"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/bin/edge-app"

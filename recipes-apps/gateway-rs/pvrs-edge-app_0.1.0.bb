SUMMARY = "edge-app: filters, aggregates and flags anomalies in sensor topics over MQTT"
DESCRIPTION = "Subscribes to sensor topics, drops values outside a range or deadband, publishes \
count/min/max/mean per time window and raises alarms from a rolling z-score or EWMA; \
configured by /etc/edge-app/edge.toml (the container's _config overlay); signals READY to \
pantavisor once connected."

require recipes-core/pantavisor-rs/pantavisor-rs.inc

PVRS_CRATE = "edge-app"

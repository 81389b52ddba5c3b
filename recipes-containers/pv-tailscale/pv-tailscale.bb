SUMMARY = "VPN container: tailscale on the host network"
DESCRIPTION = "Remote access to the gateway over a tailnet; the auth key comes from the \
container's configuration (_config/pv-tailscale/etc/tailscale/authkey)."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "pv-container-init-tailscale"

PVCONTAINER_GROUP = "platform"
PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/sbin/tailscale-start"
PVCONTAINER_VOLUMES = "/var/lib/tailscale:permanent"

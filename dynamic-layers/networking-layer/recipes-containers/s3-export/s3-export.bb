SUMMARY = "Exports the gateway's aggregates to an S3 bucket"
DESCRIPTION = "Buffers the edge-app's aggregates on a permanent volume and uploads them to S3 (curl, AWS SigV4) at an interval."
LICENSE = "MIT"

inherit core-image pvcontainer

IMAGE_INSTALL = "gateway-apps-s3-export"

PVCONTAINER_HOST_NETWORK = "1"
PVCONTAINER_ENTRYPOINT = "/usr/bin/s3-export"
PVCONTAINER_VOLUMES = "/var/lib/s3-export:permanent"

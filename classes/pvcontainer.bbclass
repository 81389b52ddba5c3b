# pvcontainer: turn an image recipe's root filesystem into a Pantavisor
# container part.
#
#   inherit core-image pvcontainer
#   IMAGE_INSTALL = "mosquitto"
#   PVCONTAINER_GROUP = "platform"
#
# The image type "pvrexport" runs `pvcompose container` on the image rootfs
# (under pseudo, so owners, modes, device nodes and xattrs are the image's) and
# deploys ${IMAGE_LINK_NAME}.pvrexport to DEPLOY_DIR_IMAGE: a tar of the part's
# state JSON (run.json, src.json, the OCI config and the _config overlay) and its
# objects (root.squashfs), named by sha256. pvroot-image picks it up by recipe
# name. The container is named after the recipe (PN).
#
# Every setting below is optional; empty means the composer's default.

# Group the container starts in: data, root, platform, app (or one of device.json).
PVCONTAINER_GROUP ?= ""
# MOUNTED, STARTED or READY.
PVCONTAINER_STATUS_GOAL ?= ""
# "container" (restart only this container) or "system" (reboot on crash/update).
PVCONTAINER_RESTART_POLICY ?= ""
# auto_recovery as JSON, e.g. '{"policy":"on-failure","max_retries":5,"retry_delay":2}'.
PVCONTAINER_AUTO_RECOVERY ?= ""
# Space-separated: mgmt, nobody.
PVCONTAINER_ROLES ?= ""
# Space-separated PATH:PERSISTENCE[@DISK], e.g. "/var/lib/mosquitto:permanent".
PVCONTAINER_VOLUMES ?= ""
# xconnect services this container provides, space-separated NAME:TYPE:SOCKET
# (TYPE unix, rest or dbus; SOCKET the path its program listens on), written
# to its services.json, e.g. "mqtt:unix:/run/mosquitto/mqtt.sock".
PVCONTAINER_SERVICES ?= ""
# xconnect services this container requires, space-separated
# NAME:TYPE:TARGET[:ROLE] (TARGET: where the daemon puts the service's socket
# in this container; ROLE: the identity the provider sees, e.g. a D-Bus
# policy user). The container starts once each provider reached its goal.
PVCONTAINER_REQUIRES ?= ""
# Space-separated service names for run.json "exports" (read by upstream
# Pantavisor; the pantavisor-rs daemon refuses a state that has them).
PVCONTAINER_EXPORTS ?= ""
# The program and its arguments (space-separated; use PVCONTAINER_ARGS_JSON
# for arguments that contain spaces).
PVCONTAINER_ENTRYPOINT ?= ""
PVCONTAINER_ARGS ?= ""
# Space-separated KEY=VALUE.
PVCONTAINER_ENV ?= ""
PVCONTAINER_WORKDIR ?= ""
# UID[:GID] or USER[:GROUP] of the rootfs.
PVCONTAINER_USER ?= ""
# "1": share the host's network namespace (network managers, VPNs).
PVCONTAINER_HOST_NETWORK ?= "0"
# "1": protect the root squashfs with dm-verity (a hash tree object and
# _dm/root.squashfs.json); the kernel needs CONFIG_DM_VERITY (pantavisor.cfg).
PVCONTAINER_DM_VERITY ?= "0"
# The part's format: oci (config.json; the default) or lxc (Pantavisor's
# lxc.container.conf, for parts that also run on Pantavisor's own devices).
PVCONTAINER_FORMAT ?= "oci"
# A settings file in pvr's args.json style (PV_* and Docker config keys); the
# variables above override it.
PVCONTAINER_ARGS_JSON ?= ""
# A directory overlaid on the container as _config/${PN}/ (files from SRC_URI
# land in UNPACKDIR, or WORKDIR before styhead).
PVCONTAINER_SRCDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
PVCONTAINER_CONFIG_DIR ?= ""
# Paths of the rootfs left out of the squashfs (the composer's glob syntax).
PVCONTAINER_EXCLUDES ?= ""

# Compression: xz by default; "zstd" or "lz4" in PVROOT_FEATURES (distro or
# local.conf) trade size for faster mounts and updates on the device.
PVCONTAINER_COMP ?= "${@bb.utils.contains('PVROOT_FEATURES', 'zstd', 'zstd', bb.utils.contains('PVROOT_FEATURES', 'lz4', 'lz4', 'xz', d), d)}"
PVCONTAINER_BCJ ?= ""
PVCONTAINER_BCJ:x86-64 ?= "${@'x86' if d.getVar('PVCONTAINER_COMP') == 'xz' else ''}"
PVCONTAINER_BLOCK_SIZE ?= "128K"

# A container needs no init, kernel or locales; keep what every rootfs needs.
PVCONTAINER_BASE_INSTALL ?= "base-files base-passwd"
PACKAGE_INSTALL:append = " ${PVCONTAINER_BASE_INSTALL}"
IMAGE_LINGUAS = ""
IMAGE_FSTYPES = "pvrexport"
IMAGE_TYPES += "pvrexport"

def pvcontainer_args(d):
    """The pvcompose flags for this recipe's settings, shell-quoted."""
    import shlex
    args = ["--name", d.getVar("PN")]
    single = {
        "PVCONTAINER_GROUP": "--group",
        "PVCONTAINER_STATUS_GOAL": "--status-goal",
        "PVCONTAINER_RESTART_POLICY": "--restart-policy",
        "PVCONTAINER_AUTO_RECOVERY": "--auto-recovery",
        "PVCONTAINER_WORKDIR": "--workdir",
        "PVCONTAINER_USER": "--user",
        "PVCONTAINER_ARGS_JSON": "--args-json",
        "PVCONTAINER_CONFIG_DIR": "--config-dir",
        "PVCONTAINER_COMP": "--comp",
        "PVCONTAINER_BCJ": "--bcj",
        "PVCONTAINER_BLOCK_SIZE": "--block-size",
    }
    for var, flag in single.items():
        value = (d.getVar(var) or "").strip()
        if value:
            args += [flag, value]
    repeated = {
        "PVCONTAINER_ROLES": "--role",
        "PVCONTAINER_VOLUMES": "--volume",
        "PVCONTAINER_SERVICES": "--provide",
        "PVCONTAINER_REQUIRES": "--require",
        "PVCONTAINER_EXPORTS": "--export",
        "PVCONTAINER_ENTRYPOINT": "--entrypoint",
        "PVCONTAINER_ARGS": "--arg",
        "PVCONTAINER_ENV": "--env",
        "PVCONTAINER_EXCLUDES": "--exclude",
    }
    for var, flag in repeated.items():
        for value in (d.getVar(var) or "").split():
            args += [flag, value]
    if bb.utils.to_boolean(d.getVar("PVCONTAINER_HOST_NETWORK")):
        args.append("--host-network")
    if bb.utils.to_boolean(d.getVar("PVCONTAINER_DM_VERITY")):
        args.append("--dm-verity")
    if d.getVar("PVCONTAINER_FORMAT") not in ("oci", "lxc"):
        bb.fatal("pvcontainer: PVCONTAINER_FORMAT is \"%s\"; use oci or lxc" % d.getVar("PVCONTAINER_FORMAT"))
    args += ["--format", d.getVar("PVCONTAINER_FORMAT")]
    return " ".join(shlex.quote(a) for a in args)

python __anonymous() {
    comp = d.getVar("PVCONTAINER_COMP")
    if comp not in ("xz", "zstd", "lz4", "gzip"):
        bb.fatal("%s: PVCONTAINER_COMP is \"%s\"; use xz, zstd, lz4 or gzip" % (d.getVar("PN"), comp))
    policy = d.getVar("PVCONTAINER_RESTART_POLICY")
    if policy not in ("", "container", "system"):
        bb.fatal("%s: PVCONTAINER_RESTART_POLICY is \"%s\"; use container or system" % (d.getVar("PN"), policy))
    for var, form in (("PVCONTAINER_SERVICES", "NAME:TYPE:SOCKET"), ("PVCONTAINER_REQUIRES", "NAME:TYPE:TARGET[:ROLE]")):
        for entry in (d.getVar(var) or "").split():
            if entry.count(":") < 2:
                bb.fatal("%s: %s entry \"%s\" is not %s (a bare service name is PVCONTAINER_EXPORTS)" % (d.getVar("PN"), var, entry, form))
    goal = d.getVar("PVCONTAINER_STATUS_GOAL")
    if goal not in ("", "MOUNTED", "STARTED", "READY"):
        bb.fatal("%s: PVCONTAINER_STATUS_GOAL is \"%s\"; use MOUNTED, STARTED or READY" % (d.getVar("PN"), goal))
}

# nooelint: oelint.vars.specific - pvrexport is the image type this class adds
IMAGE_CMD:pvrexport = " \
    rm -rf ${WORKDIR}/pvcontainer; \
    pvcompose container --quiet \
        --rootfs ${IMAGE_ROOTFS} \
        --out ${WORKDIR}/pvcontainer \
        --pvrexport ${IMGDEPLOYDIR}/${IMAGE_NAME}.pvrexport \
        --mtime ${REPRODUCIBLE_TIMESTAMP_ROOTFS} \
        ${@pvcontainer_args(d)} \
"
do_image_pvrexport[depends] += "pvcompose-native:do_populate_sysroot squashfs-tools-native:do_populate_sysroot"
do_image_pvrexport[vardeps] += "PVCONTAINER_GROUP PVCONTAINER_STATUS_GOAL PVCONTAINER_RESTART_POLICY \
    PVCONTAINER_AUTO_RECOVERY PVCONTAINER_ROLES PVCONTAINER_VOLUMES PVCONTAINER_SERVICES PVCONTAINER_REQUIRES PVCONTAINER_EXPORTS \
    PVCONTAINER_ENTRYPOINT PVCONTAINER_ARGS PVCONTAINER_ENV PVCONTAINER_WORKDIR PVCONTAINER_USER \
    PVCONTAINER_HOST_NETWORK PVCONTAINER_DM_VERITY PVCONTAINER_FORMAT PVCONTAINER_ARGS_JSON PVCONTAINER_CONFIG_DIR PVCONTAINER_EXCLUDES \
    PVCONTAINER_COMP PVCONTAINER_BCJ PVCONTAINER_BLOCK_SIZE"

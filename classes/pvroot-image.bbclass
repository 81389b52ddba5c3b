# nooelint: oelint.bbclass.underscores - the name is the interface users inherit (meta-pantavisor's)
# pvroot-image: an image whose root filesystem is a device's data partition.
#
#   inherit image pvroot-image
#   PVROOT_CONTAINERS_CORE ?= "pv-alpine-connman pv-mqtt-broker edge-app"
#   PVROOT_CONTAINERS ?= "modbus-adapter"
#   PVROOT_IMAGE_BSP ?= "core-image-minimal"
#
# Revision 0 holds the BSP part (the kernel, our initramfs, device trees, and the
# BSP image's /lib/modules and /lib/firmware as squashfs objects) plus the
# containers of PVROOT_CONTAINERS_CORE; each container of PVROOT_CONTAINERS is
# staged as factory-pkgs.d/NAME.pvrexport.tgz, installed on first boot when the
# device's metadata (or PV_FACTORY_PKGS) selects it. Each name is an image
# recipe that inherits pvcontainer; "mc:CONFIG:RECIPE" takes it from another
# multiconfig. The class only gathers variables: `pvcompose pvroot` (native)
# does the work, from a manifest written to ${PVROOT_WORKDIR}/manifest.json.

PVROOT_CONTAINERS_CORE ??= ""
PVROOT_CONTAINERS ??= ""
PVROOT_IMAGE_BSP ??= "core-image-minimal"
# The initramfs image booted with the BSP kernel (our daemon as /init).
PVROOT_INITRAMFS ?= "pantavisor-initramfs"
# Every part is signed with this PEM key (EC P-256, P-384, P-521 or RSA); empty: unsigned.
# The layer's key is a developer key known to everyone: see files/keys/README.md. The
# keys the device trusts (PVROOT_TRUST) are built into the initramfs by pantavisor-trust,
# never put on the data partition: set PVROOT_SIGN_KEY and PVROOT_TRUST in local.conf.
PVROOT_SIGN_KEY ?= "${PANTAVISOR_RS_BASE}/files/keys/dev.key"
# config/pantavisor.config on the data partition (the "storage config" level),
# space-separated KEY=VALUE. Keys that guard the device (update.signatures,
# boot.verify_objects, the trust stores) are not taken from there: they go to
# the initramfs with PVROOT_INITRAMFS_CONFIG (recipe pantavisor-trust).
PVROOT_CONFIG ?= ""
# A device.json (groups, disks, volumes); empty: Pantavisor's default groups.
PVROOT_DEVICE_JSON ?= ""
# plain (boot/pv.env read by our initramfs, or by U-Boot through the layer's
# boot script: PVROOT_UBOOT_SCRIPT), uboot (Pantavisor's boot/uboot.txt) or
# rpi-tryboot (set by PVROOT_RPI_TRYBOOT: the composer then also writes the
# daemon's bootloader setting, and the tryboot wks layout is used).
PVROOT_BOOTLOADER ?= "${@'rpi-tryboot' if bb.utils.to_boolean(d.getVar('PVROOT_RPI_TRYBOOT')) else 'plain'}"
# Where another multiconfig deploys: PVROOT_MC_DEPLOY_DIR[CONFIG] = "...".
PVROOT_MC_DEPLOY_DIR ?= ""
PVROOT_WORKDIR = "${WORKDIR}/pvroot"

# The rootfs is made by pvcompose, not by the package manager.
IMAGE_INSTALL = ""
PACKAGE_INSTALL = ""
IMAGE_LINGUAS = ""
IMAGE_FEATURES = ""
ROOTFS_BOOTSTRAP_INSTALL = ""
IMAGE_FSTYPES ?= "ext4"
# The data partition is mounted by label.
# nooelint: oelint.vars.specific - ext4 is an image type override
EXTRA_IMAGECMD:ext4 = "-i 4096 -L pvdata"

def pvroot_split(entry, d):
    """(multiconfig or None, recipe) of a PVROOT_CONTAINERS* entry."""
    parts = entry.split(":")
    if len(parts) == 3 and parts[0] == "mc":
        return parts[1], parts[2]
    if len(parts) != 1:
        bb.fatal("pvroot-image: \"%s\": use RECIPE or mc:CONFIG:RECIPE" % entry)
    return None, entry

python __anonymous() {
    core = d.getVar("PVROOT_CONTAINERS_CORE").split()
    optional = d.getVar("PVROOT_CONTAINERS").split()
    seen = set()
    for entry in core + optional:
        mc, recipe = pvroot_split(entry, d)
        if recipe in seen:
            bb.fatal("pvroot-image: container %s is listed twice in PVROOT_CONTAINERS_CORE/PVROOT_CONTAINERS" % recipe)
        seen.add(recipe)
        if mc is None:
            d.appendVarFlag("do_pvroot", "depends", " %s:do_image_complete" % recipe)
        else:
            d.appendVarFlag("do_pvroot", "mcdepends", " mc:%s:%s:%s:do_image_complete" % (d.getVar("BB_CURRENT_MC") or "", mc, recipe))
    for image in (d.getVar("PVROOT_IMAGE_BSP"), d.getVar("PVROOT_INITRAMFS")):
        if not image:
            bb.fatal("pvroot-image: PVROOT_IMAGE_BSP and PVROOT_INITRAMFS must name image recipes")
        d.appendVarFlag("do_pvroot", "depends", " %s:do_image_complete" % image)
    if d.getVar("PVROOT_BOOTLOADER") not in ("plain", "uboot", "rpi-tryboot"):
        bb.fatal("pvroot-image: PVROOT_BOOTLOADER is \"%s\"; use plain, uboot or rpi-tryboot" % d.getVar("PVROOT_BOOTLOADER"))
    if bb.utils.to_boolean(d.getVar("PVROOT_RPI_TRYBOOT")) != (d.getVar("PVROOT_BOOTLOADER") == "rpi-tryboot"):
        bb.fatal("pvroot-image: PVROOT_RPI_TRYBOOT and PVROOT_BOOTLOADER disagree; set PVROOT_RPI_TRYBOOT alone")
    if bb.utils.to_boolean(d.getVar("PVROOT_UBOOT_SCRIPT")):
        if "rpi" in (d.getVar("MACHINEOVERRIDES") or "").split(":"):
            bb.fatal("pvroot-image: PVROOT_UBOOT_SCRIPT is for U-Boot boards; a Raspberry Pi boots through its firmware (PVROOT_RPI_TRYBOOT)")
        if d.getVar("PVROOT_BOOTLOADER") not in ("plain", "uboot"):
            bb.fatal("pvroot-image: PVROOT_UBOOT_SCRIPT needs PVROOT_BOOTLOADER plain or uboot (the script reads boot/pv.env or boot/uboot.txt)")
        d.setVar("WKS_FILE", "pantavisor-uboot.wks.in")
}

def pvroot_part_path(entry, d):
    """The deployed pvrexport of a container recipe (see pvcontainer.bbclass)."""
    import os
    mc, recipe = pvroot_split(entry, d)
    deploy = d.getVar("DEPLOY_DIR_IMAGE")
    if mc is not None:
        deploy = d.getVarFlag("PVROOT_MC_DEPLOY_DIR", mc) or os.path.join(d.getVar("TOPDIR"), "tmp-" + mc, "deploy", "images", d.getVar("MACHINE"))
    name = recipe + d.getVar("IMAGE_MACHINE_SUFFIX") + d.getVar("IMAGE_NAME_SUFFIX") + ".pvrexport"
    path = os.path.join(deploy, name)
    if not os.path.exists(path):
        bb.fatal("pvroot-image: %s: no %s; does the recipe inherit pvcontainer?" % (recipe, path))
    return recipe, path

def pvroot_bsp_tree(d, workdir):
    """Unpack the BSP image's rootfs tarball; return (modules, firmware) trees or None."""
    import glob
    import os
    import shutil
    deploy = d.getVar("DEPLOY_DIR_IMAGE")
    base = os.path.join(deploy, d.getVar("PVROOT_IMAGE_BSP") + d.getVar("IMAGE_MACHINE_SUFFIX") + d.getVar("IMAGE_NAME_SUFFIX"))
    tarballs = [base + ".tar" + ext for ext in (".zst", ".xz", ".bz2", ".gz", "")]
    tarball = next((t for t in tarballs if os.path.exists(t)), None)
    if tarball is None:
        bb.fatal("pvroot-image: no rootfs tarball of %s (%s.tar*): add a tar type to its IMAGE_FSTYPES" % (d.getVar("PVROOT_IMAGE_BSP"), base))
    rootfs = os.path.join(workdir, "bsp-rootfs")
    bb.utils.mkdirhier(rootfs)
    bb.process.run(["tar", "-xf", tarball, "-C", rootfs])
    modules = firmware = None
    for prefix in ("usr/lib", "lib"):
        src = os.path.join(rootfs, prefix, "modules")
        if modules is None and os.path.isdir(src) and os.listdir(src):
            modules = os.path.join(workdir, "modules")
            bb.utils.mkdirhier(os.path.join(modules, "lib"))
            shutil.move(src, os.path.join(modules, "lib", "modules"))
            # What the BSP image loads at boot (KERNEL_MODULE_AUTOLOAD) is the
            # revision's list: modules-load.d in the module tree, which
            # pantavisor reads after mounting modules.squashfs.
            confs = sorted(glob.glob(os.path.join(rootfs, "etc/modules-load.d/*.conf")) +
                           glob.glob(os.path.join(rootfs, "usr/lib/modules-load.d/*.conf")))
            for release in glob.glob(os.path.join(modules, "lib", "modules", "*")):
                if confs and os.path.isdir(release):
                    bb.utils.mkdirhier(os.path.join(release, "modules-load.d"))
                    for conf in confs:
                        shutil.copy(conf, os.path.join(release, "modules-load.d"))
        src = os.path.join(rootfs, prefix, "firmware")
        if firmware is None and os.path.isdir(src) and os.listdir(src):
            firmware = src
    return modules, firmware

python do_pvroot() {
    import json
    import os
    import shutil

    workdir = d.getVar("PVROOT_WORKDIR")
    shutil.rmtree(workdir, ignore_errors=True)
    bb.utils.mkdirhier(workdir)
    deploy = d.getVar("DEPLOY_DIR_IMAGE")

    modules, firmware = pvroot_bsp_tree(d, workdir)
    kernel = os.path.join(deploy, d.getVar("KERNEL_IMAGETYPE"))
    initrd = os.path.join(deploy, d.getVar("PVROOT_INITRAMFS") + d.getVar("IMAGE_MACHINE_SUFFIX") + ".cpio.gz")
    fdts = []
    for dtb in (d.getVar("KERNEL_DEVICETREE") or "").split():
        if dtb.endswith(".dtb"):
            fdts.append(os.path.join(deploy, os.path.basename(dtb)))
    bsp = {"kernel": kernel, "initrd": initrd, "fdt": fdts}
    if modules:
        bsp["modules"] = modules
    if firmware:
        bsp["firmware"] = firmware

    containers = {}
    core = []
    optional = []
    for var, names in (("PVROOT_CONTAINERS_CORE", core), ("PVROOT_CONTAINERS", optional)):
        for entry in d.getVar(var).split():
            name, path = pvroot_part_path(entry, d)
            containers[name] = {"part": path}
            names.append(name)

    config = {}
    for item in d.getVar("PVROOT_CONFIG").split():
        key, sep, value = item.partition("=")
        if not sep:
            bb.fatal("pvroot-image: PVROOT_CONFIG entry \"%s\" is not KEY=VALUE" % item)
        config[key] = value

    manifest = {
        "bsp": bsp,
        "containers": containers,
        "core": core,
        "optional": optional,
        "config": config,
        "bootloader": d.getVar("PVROOT_BOOTLOADER"),
        "squashfs": {
            "comp": d.getVar("PVCONTAINER_COMP") or "xz",
            "mtime": int(d.getVar("REPRODUCIBLE_TIMESTAMP_ROOTFS")),
        },
    }
    if d.getVar("PVROOT_DEVICE_JSON"):
        manifest["device"] = d.getVar("PVROOT_DEVICE_JSON")
    if d.getVar("PVROOT_SIGN_KEY"):
        manifest["sign"] = {"key": d.getVar("PVROOT_SIGN_KEY")}
    path = os.path.join(workdir, "manifest.json")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)

    out = os.path.join(workdir, "pvroot")
    bb.note("pvcompose pvroot --manifest %s" % path)
    bb.process.run(["pvcompose", "pvroot", "--quiet", "--manifest", path, "--out", out])

    # The image rootfs becomes exactly the pvroot.
    rootfs = d.getVar("IMAGE_ROOTFS")
    for entry in os.listdir(rootfs):
        p = os.path.join(rootfs, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    bb.process.run(["cp", "-a", out + "/.", rootfs + "/"])
    if bb.utils.to_boolean(d.getVar("PVROOT_RPI_TRYBOOT")):
        # Raspberry Pi tryboot: the firmware boots partition 2 (A), or 3 (B)
        # when rebooted with the tryboot flag; the daemon swaps them on commit.
        bootsel = os.path.join(workdir, "bootsel")
        bb.utils.mkdirhier(bootsel)
        with open(os.path.join(bootsel, "autoboot.txt"), "w") as f:
            f.write("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n")
}
addtask pvroot after do_rootfs before do_image
do_pvroot[fakeroot] = "1"
do_pvroot[depends] += "pvcompose-native:do_populate_sysroot squashfs-tools-native:do_populate_sysroot \
    virtual/kernel:do_deploy"
do_pvroot[vardeps] += "PVROOT_CONTAINERS_CORE PVROOT_CONTAINERS PVROOT_IMAGE_BSP PVROOT_INITRAMFS \
    PVROOT_SIGN_KEY PVROOT_CONFIG PVROOT_DEVICE_JSON PVROOT_BOOTLOADER PVROOT_RPI_TRYBOOT"
do_pvroot[file-checksums] += "${@' '.join(p + ':True' for p in d.getVar('PVROOT_SIGN_KEY').split())}"

# U-Boot boards (not Raspberry Pi): PVROOT_UBOOT_SCRIPT = "1" puts the layer's
# boot.scr (recipe pantavisor-boot-script), which boots each revision's own
# kernel, initramfs and device tree from the data partition's trails, on the
# boot partition of files/wic/pantavisor-uboot.wks.in.
PVROOT_UBOOT_SCRIPT ?= "0"
IMAGE_BOOT_FILES:append = " ${@'boot.scr pv-boot.env' if bb.utils.to_boolean(d.getVar('PVROOT_UBOOT_SCRIPT')) else ''}"
do_image_wic[depends] += "${@'pantavisor-boot-script:do_deploy' if bb.utils.to_boolean(d.getVar('PVROOT_UBOOT_SCRIPT')) else ''}"

# Raspberry Pi: an SD card with the firmware, kernel and our initramfs on the
# boot partition and the pvroot as the data partition; PVROOT_RPI_TRYBOOT = "1"
# gives the A/B tryboot layout instead.
PVROOT_RPI_TRYBOOT ?= "0"
# nooelint: oelint.vars.specific - rpi is meta-raspberrypi's machine override
IMAGE_FSTYPES:rpi = "ext4 wic.bz2 wic.bmap"
# The layouts are in files/wic, where wrynose looks (BBPATH/files/wic);
# scarthgap looks in BBPATH/wic only, so the layer's folder is named here.
WKS_SEARCH_PATH:prepend = "${PANTAVISOR_RS_BASE}/files/wic:"
# nooelint: oelint.vars.specific - rpi is meta-raspberrypi's machine override
WKS_FILE:rpi = "${@'pantavisor-rpi-tryboot.wks.in' if bb.utils.to_boolean(d.getVar('PVROOT_RPI_TRYBOOT')) else 'pantavisor-rpi.wks.in'}"
# nooelint: oelint.vars.specific - rpi is meta-raspberrypi's machine override
IMAGE_BOOT_FILES:append:rpi = " ${PVROOT_INITRAMFS}${IMAGE_MACHINE_SUFFIX}.cpio.gz;pantavisor.cpio.gz"
do_image_wic[depends] += "${PVROOT_INITRAMFS}:do_image_complete"

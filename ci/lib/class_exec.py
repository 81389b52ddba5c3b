#!/usr/bin/env python3
"""Run the classes' code for real with BitBake's tinfoil API (ci/yocto-releases exec).

Inside a BitBake build environment (kas shell) with pvcompose and mksquashfs on
PATH:
1. every container of iot-gateway-image (PVROOT_CONTAINERS_CORE and
   PVROOT_CONTAINERS) is parsed and pvcontainer's image command
   (do_image_pvrexport, made by image.bbclass from IMAGE_CMD:pvrexport) runs
   with bb.build.exec_func on a staged rootfs (busybox as the entrypoint),
   then image.bbclass's own create_symlinks names it as pvroot-image looks for it;
2. the BSP is staged as the machine's recipes would deploy it: the kernel as
   KERNEL_IMAGETYPE, our initramfs as PVROOT_INITRAMFS-MACHINE.cpio.gz, the
   device trees of KERNEL_DEVICETREE (compiled with dtc), and the rootfs
   tarball of PVROOT_IMAGE_BSP holding lib/modules, lib/firmware and
   etc/modules-load.d;
3. iot-gateway-image's do_pvroot runs with exec_func; the manifest it wrote and
   the pvroot's top level are printed;
4. do_pvroot runs again with a wrong PVROOT_CONTAINERS entry, twice (a recipe
   that deploys no pvrexport; a malformed mc: entry): each must fail with the
   class's own message and no traceback;
5. pantavisor-rs is parsed with RUSTVERSION = "1.75%" (scarthgap without the
   mixin): it must be skipped, saying which Rust it needs.

Usage: class_exec.py --stage DIR --bsp DIR (ci/mkimage bsp output) --busybox PATH
       class_exec.py --rust-skip-only      (step 5 alone)
"""
import argparse
import glob
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile

bitbake = shutil.which("bitbake")
if not bitbake:
    sys.exit("class_exec: no bitbake on PATH (run inside kas shell)")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(bitbake))), "lib"))
import bb.build  # noqa: E402
import bb.methodpool  # noqa: E402
import bb.tinfoil  # noqa: E402

IMAGE = "iot-gateway-image"


def say(msg):
    print("class_exec: " + msg, flush=True)


class Captured(logging.Handler):
    """The BitBake log records of one exec_func call."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self):
        out = []
        for r in self.records:
            out.append("%s: %s" % (r.levelname, r.getMessage()))
            if r.exc_info:
                out.append("".join(__import__("traceback").format_exception(*r.exc_info)))
        return "\n".join(out)


def load_defs(d):
    """Make the recipe's `def` functions (classes' helpers) callable here, as parsing does in the server."""
    for key in d.keys():
        if d.getVarFlag(key, "python") and d.getVarFlag(key, "func") and not key.startswith("__anon"):
            text = d.getVar(key, False) or ""
            if text.lstrip().startswith("def "):
                bb.methodpool.insert_method(key, text, d.getVar("FILE"), 1)


def recipe(tinfoil, name, tmpdir):
    """NAME parsed with TMPDIR (and so WORKDIR, IMAGE_ROOTFS, IMGDEPLOYDIR, DEPLOY_DIR_IMAGE) under
    the stage: image.bbclass expands those paths into do_image_* when it parses."""
    config = bb.data.createCopy(tinfoil.config_data)
    config.setVar("TMPDIR", tmpdir)
    d = tinfoil.parse_recipe_file(tinfoil.get_recipe_file(name), config_data=config)
    load_defs(d)
    d.setVar("PATH", os.environ["PATH"])
    for var in ("T", "IMAGE_ROOTFS"):
        os.makedirs(d.getVar(var), exist_ok=True)
    return d


def exec_func(func, d):
    """bb.build.exec_func with its log captured; returns (ok, log text)."""
    log = Captured()
    logger = logging.getLogger("BitBake")
    logger.addHandler(log)
    try:
        bb.build.exec_func(func, d)
        ok = True
    except bb.BBHandledException:
        ok = False
    except Exception:
        import traceback

        log.records.append(logging.makeLogRecord({"levelname": "TRACEBACK", "msg": traceback.format_exc()}))
        ok = False
    finally:
        logger.removeHandler(log)
    return ok, log.text()


def stage_rootfs(path, busybox, entrypoint):
    os.makedirs(os.path.join(path, "bin"))
    os.makedirs(os.path.join(path, "etc"))
    shutil.copy(busybox, os.path.join(path, "bin", "busybox"))
    os.symlink("busybox", os.path.join(path, "bin", "sh"))
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    if entrypoint:
        target = os.path.join(path, entrypoint.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            shutil.copy(busybox, target)


def container_part(tinfoil, name, tmpdir, busybox):
    d = recipe(tinfoil, name, tmpdir)
    rootfs = d.getVar("IMAGE_ROOTFS")
    shutil.rmtree(rootfs)
    stage_rootfs(rootfs, busybox, d.getVar("PVCONTAINER_ENTRYPOINT"))
    imgdeploy = d.getVar("IMGDEPLOYDIR")
    os.makedirs(imgdeploy, exist_ok=True)
    d.setVar("BB_CURRENTTASK", "image_pvrexport")
    for func in ("do_image_pvrexport", "create_symlinks"):
        ok, log = exec_func(func, d)
        if not ok:
            print(log)
            raise SystemExit("class_exec: %s: %s failed" % (name, func))
    # What do_image_complete's sstate does: IMGDEPLOYDIR into DEPLOY_DIR_IMAGE.
    deploy = d.getVar("DEPLOY_DIR_IMAGE")
    os.makedirs(deploy, exist_ok=True)
    for entry in os.listdir(imgdeploy):
        src = os.path.join(imgdeploy, entry)
        dst = os.path.join(deploy, entry)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    link = os.path.join(deploy, d.getVar("IMAGE_LINK_NAME") + ".pvrexport")
    if not os.path.islink(link):
        raise SystemExit("class_exec: %s: create_symlinks made no %s" % (name, link))
    say("%s: do_image_pvrexport -> %s (%d bytes), link %s" % (
        name, os.readlink(link), os.path.getsize(link), os.path.basename(link)))
    return deploy


def stage_bsp(d, deploy, bsp, stage):
    machine_suffix = d.getVar("IMAGE_MACHINE_SUFFIX")
    kernel = os.path.join(deploy, d.getVar("KERNEL_IMAGETYPE"))
    shutil.copy(os.path.join(bsp, "vmlinuz"), kernel)
    initrd = os.path.join(deploy, d.getVar("PVROOT_INITRAMFS") + machine_suffix + ".cpio.gz")
    shutil.copy(os.path.join(bsp, "initramfs.cpio.gz"), initrd)
    dtbs = [x for x in (d.getVar("KERNEL_DEVICETREE") or "").split() if x.endswith(".dtb")]
    for dtb in dtbs:
        src = "/dts-v1/;\n/ { model = \"%s\"; #address-cells = <1>; #size-cells = <1>; };\n" % os.path.basename(dtb)
        subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", os.path.join(deploy, os.path.basename(dtb)), "-"],
                       input=src.encode(), check=True)
    tarball = os.path.join(deploy, d.getVar("PVROOT_IMAGE_BSP") + machine_suffix + d.getVar("IMAGE_NAME_SUFFIX") + ".tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(os.path.join(bsp, "modules", "lib", "modules"), arcname="lib/modules")
        for name, data in (("lib/firmware/regulatory.db", b"\x00" * 64),
                           ("etc/modules-load.d/gateway.conf", b"overlay\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    releases = os.listdir(os.path.join(bsp, "modules", "lib", "modules"))
    say("BSP staged: %s, %s, %d device trees, %s (modules of %s)" % (
        os.path.basename(kernel), os.path.basename(initrd), len(dtbs), os.path.basename(tarball), " ".join(releases)))


def pvroot(tinfoil, tmpdir, deploy, extra=None):
    d = recipe(tinfoil, IMAGE, tmpdir)
    d.setVar("DEPLOY_DIR_IMAGE", deploy)
    for var, value in (extra or {}).items():
        d.setVar(var, value)
    ok, log = exec_func("do_pvroot", d)
    return d, ok, log, d.getVar("IMAGE_ROOTFS")


def rust_skip(tinfoil):
    """pantavisor-rs with too old a Rust is skipped at parse time, with the reason."""
    config = bb.data.createCopy(tinfoil.config_data)
    config.setVar("RUSTVERSION", "1.75%")
    # BitBake keeps a skipped recipe's reason in __SKIPPED (ast.multi_finalize)
    d = tinfoil.parse_recipe_file(tinfoil.get_recipe_file("pantavisor-rs"), config_data=config)
    text = d.getVar("__SKIPPED") or "parsed, not skipped (RUSTVERSION %s)" % d.getVar("RUSTVERSION")
    reason = next((line.strip() for line in text.splitlines() if "needs Rust >=" in line), None)
    say("pantavisor-rs with RUSTVERSION 1.75%%: %s" % (("skipped: " + reason) if reason else "WRONG: " + text))
    if not reason:
        raise SystemExit("class_exec: pantavisor-rs was not skipped for an old Rust")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage")
    ap.add_argument("--bsp")
    ap.add_argument("--busybox")
    ap.add_argument("--rust-skip-only", action="store_true")
    args = ap.parse_args()
    if args.rust_skip_only:
        with bb.tinfoil.Tinfoil() as tinfoil:
            tinfoil.prepare(config_only=False, quiet=2)
            rust_skip(tinfoil)
        return
    if not (args.stage and args.bsp and args.busybox):
        ap.error("--stage, --bsp and --busybox are needed")
    stage = os.path.abspath(args.stage)
    tmpdir = os.path.join(stage, "tmp")
    if not shutil.which("pvcompose"):
        sys.exit("class_exec: no pvcompose on PATH")

    with bb.tinfoil.Tinfoil() as tinfoil:
        tinfoil.prepare(config_only=False, quiet=2)
        img = recipe(tinfoil, IMAGE, tmpdir)
        say("%s: MACHINE %s, DISTRO %s, BitBake %s, RUSTVERSION %s; TMPDIR %s" % (
            IMAGE, img.getVar("MACHINE"), img.getVar("DISTRO"), bb.__version__, img.getVar("RUSTVERSION"), tmpdir))
        core = img.getVar("PVROOT_CONTAINERS_CORE").split()
        optional = img.getVar("PVROOT_CONTAINERS").split()
        for name in core + optional:
            deploy = container_part(tinfoil, name, tmpdir, args.busybox)
        if deploy != img.getVar("DEPLOY_DIR_IMAGE"):
            raise SystemExit("class_exec: containers deploy to %s, the image reads %s" % (deploy, img.getVar("DEPLOY_DIR_IMAGE")))
        stage_bsp(img, deploy, args.bsp, stage)

        d, ok, log, rootfs = pvroot(tinfoil, tmpdir, deploy)
        if not ok:
            print(log)
            raise SystemExit("class_exec: do_pvroot failed")
        manifest = os.path.join(d.getVar("PVROOT_WORKDIR"), "manifest.json")
        say("do_pvroot ok; its manifest %s:" % manifest)
        for line in json.dumps(json.load(open(manifest)), indent=1).splitlines():
            print("class_exec:   " + line.replace(stage, "$STAGE"))
        say("pvroot %s: %s" % (rootfs.replace(stage, "$STAGE"), " ".join(sorted(os.listdir(rootfs)))))
        with open(os.path.join(stage, "pvroot-path"), "w") as f:
            f.write(rootfs)
        say("revision 0: %s" % " ".join(sorted(k for k in json.load(open(os.path.join(rootfs, "trails/0/.pvr/json"))))))
        factory = sorted(glob.glob(os.path.join(rootfs, "**", "*.pvrexport.tgz"), recursive=True))
        say("factory packages: %s" % " ".join(os.path.relpath(f, rootfs) for f in factory))
        expect = set(optional)
        got = {os.path.basename(f).split(".")[0] for f in factory}
        if got != expect:
            raise SystemExit("class_exec: factory packages %s, expected %s" % (sorted(got), sorted(expect)))

        bad = 0
        for value, want in (("no-such-container", "no-such-container: no "),
                            ("mc:one:two:three", "use RECIPE or mc:CONFIG:RECIPE")):
            _, ok, log, _ = pvroot(tinfoil, os.path.join(stage, "tmp-bad-" + value.replace(":", "_")), deploy,
                                   {"PVROOT_CONTAINERS": value})
            first = next((line for line in log.splitlines() if "pvroot-image" in line), log.splitlines()[:1])
            clean = not ok and want in log and "Traceback" not in log and "TRACEBACK" not in log
            bad += not clean
            say("PVROOT_CONTAINERS = \"%s\": %s: %s" % (value, "class error, no traceback" if clean else "WRONG", first))
            if not clean:
                print(log)
        if bad:
            raise SystemExit("class_exec: %d wrong entries not refused by the class" % bad)
        rust_skip(tinfoil)
    say("done")


if __name__ == "__main__":
    main()

# nooelint: oelint.var.mandatoryvar.SRC_URI - the keys are files named by PVROOT_TRUST (local.conf), checksummed by do_install
SUMMARY = "The device's built-in trust store and security configuration"
DESCRIPTION = "Installs the PEM public keys and CA certificates of PVROOT_TRUST into \
/etc/pantavisor/certs of the initramfs, where the daemon reads its trust store \
(secureboot.truststore), and those of PVROOT_OEM_TRUST into /etc/pantavisor/certs/oem \
(OEM CA certificates, which must chain to a built-in CA), and PVROOT_INITRAMFS_CONFIG into \
/etc/pantavisor.config (the keys that guard the device). Nothing on the writable data \
partition is trusted by itself. Set both in local.conf or a kas file, not in an image \
recipe: this recipe is built on its own."
HOMEPAGE = "https://github.com/meta-pantavisor-rs/meta-pantavisor-rs"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# The layer's developer key, only while the parts are signed with the layer's
# developer key (see files/keys/README.md and classes/pvroot-image.bbclass).
PVROOT_SIGN_KEY ??= "${PANTAVISOR_RS_BASE}/files/keys/dev.key"
PVROOT_TRUST ??= "${@'${PANTAVISOR_RS_BASE}/files/keys/dev.pub' if d.getVar('PVROOT_SIGN_KEY') == '${PANTAVISOR_RS_BASE}/files/keys/dev.key' else ''}"
PVROOT_OEM_TRUST ??= ""
# /etc/pantavisor.config in the initramfs (the "pv.conf" level), space-separated
# KEY=VALUE: where the keys that guard the device are set. Strict signature
# checks whenever the parts are signed.
PVROOT_INITRAMFS_CONFIG ??= "update.signatures=${@'strict' if d.getVar('PVROOT_SIGN_KEY') else 'lenient'}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

python do_install() {
    import os
    import shutil
    for var, sub in (("PVROOT_TRUST", ""), ("PVROOT_OEM_TRUST", "oem")):
        dest = os.path.join(d.getVar("D") + d.getVar("sysconfdir"), "pantavisor", "certs", sub)
        bb.utils.mkdirhier(dest)
        names = set()
        for pem in (d.getVar(var) or "").split():
            if not os.path.isfile(pem):
                bb.fatal("%s: %s is not a file" % (var, pem))
            with open(pem, errors="replace") as f:
                if "-----BEGIN " not in f.read():
                    bb.fatal("%s: %s is not PEM (a public key or a certificate)" % (var, pem))
            name = os.path.basename(pem)
            if not name.endswith((".pem", ".crt")):
                name += ".pem"
            if name in names:
                bb.fatal("%s: two files named %s" % (var, name))
            names.add(name)
            shutil.copy(pem, os.path.join(dest, name))
            os.chmod(os.path.join(dest, name), 0o644)
    lines = []
    for item in (d.getVar("PVROOT_INITRAMFS_CONFIG") or "").split():
        if "=" not in item:
            bb.fatal("PVROOT_INITRAMFS_CONFIG entry \"%s\" is not KEY=VALUE" % item)
        lines.append(item + "\n")
    conf = d.getVar("D") + d.getVar("sysconfdir") + "/pantavisor.config"
    with open(conf, "w") as f:
        f.write("# The initramfs's configuration (pv.conf level), from PVROOT_INITRAMFS_CONFIG.\n")
        f.writelines(lines)
    os.chmod(conf, 0o644)
}
do_install[vardeps] += "PVROOT_TRUST PVROOT_OEM_TRUST PVROOT_INITRAMFS_CONFIG PVROOT_SIGN_KEY"
do_install[file-checksums] += "${@' '.join(p + ':True' for p in (d.getVar('PVROOT_TRUST') + ' ' + d.getVar('PVROOT_OEM_TRUST')).split())}"

FILES:${PN} = "${sysconfdir}/pantavisor/certs ${sysconfdir}/pantavisor.config"

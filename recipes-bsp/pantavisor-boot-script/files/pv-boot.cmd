# U-Boot script of meta-pantavisor-rs (compiled to boot.scr by the
# pantavisor-boot-script recipe): boots the kernel, initramfs and device
# tree of the revision the daemon's handshake names, from the data
# partition's trails, so a BSP update changes the booted kernel.
#
# The daemon keeps pv_rev (committed) and pv_try (to try) in /boot/pv.env on
# the data partition (plain KEY=VALUE lines; Pantavisor's /boot/uboot.txt
# when there is no pv.env). A try is begun here at most
# once: pv_uboot_tried=REV is saved to pv-uboot.env on the boot partition
# before its kernel is loaded, so a kernel that cannot start (the board's
# watchdog resets it) is not loaded again; the next boot takes pv_rev, and
# the daemon, told pv_bootrev=REV on the command line, sees its try never
# reached it and rolls it back.
#
# Board settings come from pv-boot.env on the boot partition (text, written
# by the image): pv_bootargs (the kernel command line), pv_datapart (the
# data partition's number, default 2; not every U-Boot has setexpr).

echo "pantavisor: boot script"
test -n "${devtype}" || setenv devtype mmc
test -n "${devnum}" || setenv devnum 0
test -n "${pv_bootpart}" || setenv pv_bootpart ${distro_bootpart}
test -n "${pv_bootpart}" || setenv pv_bootpart 1
test -n "${loadaddr}" || setenv loadaddr ${kernel_addr_r}
setenv pv_boot "${devtype} ${devnum}:${pv_bootpart}"

if load ${pv_boot} ${loadaddr} /pv-boot.env; then
    env import -t ${loadaddr} ${filesize}
fi
test -n "${pv_datapart}" || setenv pv_datapart 2
setenv pv_data "${devtype} ${devnum}:${pv_datapart}"

setenv pv_rev 0
setenv pv_try
setenv pv_trying
if load ${pv_data} ${loadaddr} /boot/pv.env; then
    env import -t ${loadaddr} ${filesize}
else
    if load ${pv_data} ${loadaddr} /boot/uboot.txt; then
        env import -t ${loadaddr} ${filesize}
    fi
fi

setenv boot_rev ${pv_rev}
if test -n "${pv_try}" && test "${pv_try}" != "${pv_rev}"; then
    setenv pv_uboot_tried
    if load ${pv_boot} ${loadaddr} /pv-uboot.env; then
        env import -t ${loadaddr} ${filesize}
    fi
    if test "${pv_uboot_tried}" = "${pv_try}"; then
        echo "pantavisor: revision ${pv_try} was tried before; booting ${pv_rev}"
    else
        setenv pv_uboot_tried ${pv_try}
        env export -t ${loadaddr} pv_uboot_tried
        if save ${pv_boot} ${loadaddr} /pv-uboot.env ${filesize}; then
            setenv boot_rev ${pv_try}
        else
            echo "pantavisor: cannot record the try of ${pv_try}; booting ${pv_rev}"
        fi
    fi
fi

setenv pv_trail /trails/${boot_rev}/.pv
echo "pantavisor: booting revision ${boot_rev} from ${pv_data}"
load ${pv_data} ${kernel_addr_r} ${pv_trail}/pv-kernel.img
setenv pv_kernel_size ${filesize}
load ${pv_data} ${ramdisk_addr_r} ${pv_trail}/pv-initrd.img
setenv pv_initrd_size ${filesize}
setenv pv_fdt ${fdtcontroladdr}
if test -n "${fdt_addr_r}" && load ${pv_data} ${fdt_addr_r} ${pv_trail}/pv-fdt.dtb; then
    setenv pv_fdt ${fdt_addr_r}
fi
setenv bootargs "${pv_bootargs} pv_bootrev=${boot_rev}"

# Whichever the architecture has: zboot (x86), booti (arm64), bootz (arm).
zboot ${kernel_addr_r} ${pv_kernel_size} ${ramdisk_addr_r} ${pv_initrd_size}
booti ${kernel_addr_r} ${ramdisk_addr_r}:${pv_initrd_size} ${pv_fdt}
bootz ${kernel_addr_r} ${ramdisk_addr_r}:${pv_initrd_size} ${pv_fdt}
echo "pantavisor: the kernel of revision ${boot_rev} did not start; resetting"
reset

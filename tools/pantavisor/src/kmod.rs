//! Kernel modules without modprobe, as an init needs them: the dependency
//! order of `modules.dep`; the device aliases of `modules.alias` matched
//! against the `modalias` of the devices in sysfs that no driver has claimed
//! (coldplug, what udev or mdev do at boot); a module tree's own list in
//! `modules-load.d/*.conf`; loading with finit_module(2), compressed modules
//! decompressed by the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `modules.dep`: module path (relative to the modules dir) → its dependencies.
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let (m, deps) = l.split_once(':')?;
            Some((
                m.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// A module's name from its path: `kernel/fs/ext4/ext4.ko.xz` → `ext4`
/// (`-` and `_` are the same to the kernel).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The module files to load for `wanted`, dependencies first, each once.
pub fn load_order(dep: &BTreeMap<String, Vec<String>>, wanted: &[String]) -> Result<Vec<String>> {
    let by_name: BTreeMap<String, &String> = dep.keys().map(|p| (module_name(p), p)).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        path: &String,
        dep: &BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(path.clone()) {
            return;
        }
        for d in dep.get(path).into_iter().flatten() {
            visit(d, dep, seen, order);
        }
        order.push(path.clone());
    }
    for w in wanted {
        let path = by_name
            .get(&w.replace('-', "_"))
            .ok_or_else(|| Error::Other(format!("module {w}: not in modules.dep")))?;
        visit(path, dep, &mut seen, &mut order);
    }
    Ok(order)
}

/// `modules.alias` (`alias PATTERN MODULE` lines): (pattern, module) in file
/// order, borrowed from the text (it is tens of thousands of lines).
pub fn parse_modules_alias(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        if w.next()? != "alias" {
            return None;
        }
        Some((w.next()?, w.next()?))
    })
}

/// The `modalias` of every device below `sys_devices` (/sys/devices) that
/// no driver has claimed, sorted, each once. CPU feature aliases are left
/// out: their modules (crypto acceleration, kvm) are optional and a
/// revision that wants them lists them.
pub fn unclaimed_modaliases(sys_devices: &Path) -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![sys_devices.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut claimed = false;
        let mut alias = None;
        for e in entries.flatten() {
            // Not following links: sysfs is full of them, in cycles.
            let Ok(t) = e.file_type() else { continue };
            let name = e.file_name();
            if t.is_dir() {
                stack.push(e.path());
            } else if name == "driver" {
                claimed = true;
            } else if name == "modalias" && t.is_file() {
                alias = fs::read_to_string(e.path()).ok();
            }
        }
        if let (false, Some(a)) = (claimed, alias) {
            let a = a.trim();
            if !a.is_empty() && !a.starts_with("cpu:") {
                found.insert(a.to_string());
            }
        }
    }
    found.into_iter().collect()
}

/// The modules whose aliases (`modules.alias` text) match those of
/// `devices`, each once, in the file's order.
pub fn modules_for_devices(aliases: &str, devices: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (pattern, module) in parse_modules_alias(aliases) {
        let module = module.replace('-', "_");
        if !seen.contains(&module)
            && devices
                .iter()
                .any(|d| pvstate::glob::fnmatch(pattern.as_bytes(), d.as_bytes()))
        {
            seen.insert(module.clone());
            out.push(module);
        }
    }
    out
}

/// A module tree's own list of what to load at boot: `modules-load.d/*.conf`
/// below it (one name per line, `#` and `;` start comments), the files in
/// name order, each module once.
pub fn listed_modules(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("modules-load.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let mut out: Vec<String> = Vec::new();
    for f in files {
        for line in fs::read_to_string(&f).unwrap_or_default().lines() {
            let name = line.split(['#', ';']).next().unwrap_or("").trim();
            if !name.is_empty() && !out.iter().any(|m| m == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// One kernel's module directory (lib/modules/RELEASE).
pub struct ModuleTree {
    dir: PathBuf,
    dep: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
    /// Module files already handed to the kernel (or refused by it).
    tried: BTreeSet<String>,
}

/// What loading a list came to.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Modules the kernel took now (not those built in or already loaded).
    pub loaded: Vec<String>,
    /// `module: why` for each that could not be loaded.
    pub failed: Vec<String>,
}

impl ModuleTree {
    pub fn open(dir: &Path) -> Result<ModuleTree> {
        let dep_file = dir.join("modules.dep");
        let text = fs::read_to_string(&dep_file).map_err(|e| Error::io(&dep_file, e))?;
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect();
        Ok(ModuleTree {
            dir: dir.to_path_buf(),
            dep: parse_modules_dep(&text),
            builtin,
            tried: BTreeSet::new(),
        })
    }

    /// The modules of `modules.alias` that match the devices' aliases.
    pub fn for_devices(&self, devices: &[String]) -> Vec<String> {
        let text = fs::read_to_string(self.dir.join("modules.alias")).unwrap_or_default();
        modules_for_devices(&text, devices)
    }

    /// Load one module and what it needs, dependencies first. Built-in and
    /// already loaded modules are fine.
    pub fn load(&mut self, name: &str, loaded: &mut Vec<String>) -> Result<()> {
        if self.builtin.contains(&name.replace('-', "_")) {
            return Ok(());
        }
        for rel in load_order(&self.dep, &[name.to_string()])? {
            if !self.tried.insert(rel.clone()) {
                continue;
            }
            let path = self.dir.join(&rel);
            let file = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let flags = if rel.ends_with(".ko") {
                nix::kmod::ModuleInitFlags::empty()
            } else {
                // MODULE_INIT_COMPRESSED_FILE: .ko.xz, .ko.zst, .ko.gz
                nix::kmod::ModuleInitFlags::from_bits_retain(4)
            };
            match nix::kmod::finit_module(&file, c"", flags) {
                Ok(()) => loaded.push(module_name(&rel)),
                Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys(format!("load module {rel}"), e)),
            }
        }
        Ok(())
    }

    /// Load every module of `wanted`; the first failure is an error.
    pub fn load_all(&mut self, wanted: &[String]) -> Result<Vec<String>> {
        let mut loaded = Vec::new();
        for w in wanted {
            self.load(w, &mut loaded)?;
        }
        Ok(loaded)
    }

    /// Load what it can of `wanted`, saying what failed and why.
    pub fn load_each(&mut self, wanted: &[String]) -> Loaded {
        let mut out = Loaded::default();
        for w in wanted {
            if let Err(e) = self.load(w, &mut out.loaded) {
                out.failed.push(format!("{w}: {e}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_dependencies_first_once() {
        let dep = parse_modules_dep(
            "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz\n\
             kernel/fs/jbd2/jbd2.ko.xz:\n\
             kernel/fs/mbcache.ko.xz:\n\
             kernel/lib/crc16.ko.xz:\n\
             kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
             kernel/drivers/virtio/virtio_ring.ko.xz:\n\
             kernel/drivers/virtio/virtio.ko.xz:\n\
             kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n",
        );
        let order = load_order(
            &dep,
            &["virtio-pci".into(), "virtio_blk".into(), "ext4".into()],
        )
        .unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_pci",
                "virtio_blk",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        assert!(load_order(&dep, &["nonexistent".into()]).is_err());
    }

    #[test]
    fn aliases_match_as_fnmatch_does() {
        let m = |p: &str, s: &str| pvstate::glob::fnmatch(p.as_bytes(), s.as_bytes());
        assert!(m("virtio:d00000001v*", "virtio:d00000001v00001AF4"));
        assert!(!m("virtio:d00000001v*", "virtio:d00000002v00001AF4"));
        assert!(m(
            "pci:v00008086d0000100Esv*sd*bc*sc*i*",
            "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
        ));
        assert!(m(
            "usb:v*p*d*dc*dsc*dp*ic02isc0[26]ip*in*",
            "usb:v1234p0001d0100dc00dsc00dp00ic02isc06ip00in01"
        ));
        assert!(!m(
            "usb:v*p*d*dc*dsc*dp*ic02isc0[26]ip*in*",
            "usb:v1234p0001d0100dc00dsc00dp00ic02isc05ip00in01"
        ));
        assert!(m(
            "of:N*T*Cbrcm,bcm2711-[a-c]*",
            "of:NpcieT(null)Cbrcm,bcm2711-b0"
        ));
        assert!(!m("x[!a-c]y", "xby") && m("x[!a-c]y", "xdy") && m("x[^a]y", "xzy"));
        assert!(m("a?c", "abc") && !m("a?c", "ac"));
        assert!(m("*", "") && m("a**", "a") && !m("a", "ab") && !m("ab", "a"));
        assert!(m("x[y", "x[y"), "an unclosed bracket is literal");
        assert!(m("[]]x", "]x"), "a leading ] is a member");
    }

    #[test]
    fn coldplug_picks_the_modules_of_unclaimed_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        let dev = |path: &str, alias: &str, driver: bool| {
            let d = sys.join(path);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("modalias"), format!("{alias}\n")).unwrap();
            if driver {
                std::os::unix::fs::symlink("/nowhere", d.join("driver")).unwrap();
            }
        };
        // A network card without a driver, under a PCI bridge that has one.
        dev(
            "pci0000:00/0000:00:02.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            true,
        );
        dev(
            "pci0000:00/0000:00:02.0/virtio0",
            "virtio:d00000001v00001AF4",
            false,
        );
        dev(
            "pci0000:00/0000:00:03.0/virtio1",
            "virtio:d00000002v00001AF4",
            true,
        );
        dev(
            "system/cpu/cpu0",
            "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001",
            false,
        );
        // A link back up: not followed.
        std::os::unix::fs::symlink(sys, sys.join("pci0000:00/0000:00:02.0/virtio0/subsystem"))
            .unwrap();
        let devices = unclaimed_modaliases(sys);
        assert_eq!(devices, ["virtio:d00000001v00001AF4"]);
        let aliases = "# Aliases extracted from modules themselves.\n\
             alias virtio:d00000001v* virtio_net\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0001* aesni-intel\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* net-failover-test\n\
             alias virtio:d00000001v* virtio-net\n";
        assert_eq!(
            modules_for_devices(aliases, &devices),
            ["virtio_net", "net_failover_test"]
        );
    }

    #[test]
    fn a_trees_own_list_in_modules_load_d() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("modules-load.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("20-net.conf"),
            "# gateway\nveth\nbridge ; for the lan\n\n",
        )
        .unwrap();
        fs::write(d.join("10-fs.conf"), "overlay\nveth\n").unwrap();
        fs::write(d.join("README"), "not a list\n").unwrap();
        assert_eq!(listed_modules(tmp.path()), ["overlay", "veth", "bridge"]);
        assert!(listed_modules(&tmp.path().join("none")).is_empty());
    }
}

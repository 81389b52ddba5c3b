//! dm-verity for read-only volumes: Pantavisor's `dm:` layout.
//!
//! A container whose `root-volume` (or a `volumes` entry) is `dm:VOLUME`
//! has, beside the `VOLUME` object (the data device), an object holding its
//! hash tree (the hash device, in veritysetup's format: a 512-byte
//! superblock in the first 4 KiB block, then the tree, top level first) and
//! an inline manifest `NAME/_dm/VOLUME.json`:
//!
//! ```json
//! {"type": "dm-verity", "data_device": "root.squashfs",
//!  "hash_device": "root.squashfs.hash", "root_hash": "<hex>",
//!  "salt": "<hex>", "uuid": "<uuid>"}
//! ```
//!
//! The root hash is in the (signed) state, so the tree and through it every
//! data block are bound to the signature; the kernel checks each block as it
//! is read. Hash format 1 (the salt before the block), SHA-256, as
//! `veritysetup format` makes by default. [`build`] makes a tree from data
//! (salt and uuid derived from the data, so builds are reproducible).

use std::io::Read;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Data and hash block size of the trees [`build`] makes.
pub const BLOCK: usize = 4096;
const SUPERBLOCK_MAGIC: &[u8; 8] = b"verity\0\0";

/// A volume's `_dm/VOLUME.json` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The data device: a file of the container (`root.squashfs`).
    pub data_device: String,
    /// The hash device: a file of the container (`root.squashfs.hash`).
    pub hash_device: String,
    pub root_hash: [u8; 32],
    pub salt: Vec<u8>,
    pub uuid: String,
}

/// The key of `volume`'s manifest in container `name`.
pub fn manifest_key(name: &str, volume: &str) -> String {
    format!("{name}/_dm/{volume}.json")
}

fn file_name(field: &str, v: &Value) -> Result<String, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("\"{field}\" is not a string"))?;
    if s.is_empty() || s.contains('/') || s == "." || s == ".." {
        return Err(format!("\"{field}\": \"{s}\" is not a file name"));
    }
    Ok(s.to_string())
}

fn hex_field(field: &str, v: &Value, max: usize) -> Result<Vec<u8>, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("\"{field}\" is not a string"))?;
    match hex::decode(s) {
        Ok(b) if b.len() <= max => Ok(b),
        _ => Err(format!("\"{field}\" is not hex of at most {max} bytes")),
    }
}

impl Manifest {
    /// Parse a manifest document; the reason it is unusable.
    pub fn parse(v: &Value) -> Result<Manifest, String> {
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        match v.get("type").and_then(Value::as_str) {
            Some("dm-verity") => {}
            Some(other) => return Err(format!("type \"{other}\" is not dm-verity")),
            None => return Err("no \"type\": \"dm-verity\"".into()),
        }
        let root = hex_field("root_hash", &v["root_hash"], 32)?;
        let root_hash: [u8; 32] = root
            .try_into()
            .map_err(|_| "\"root_hash\" is not a SHA-256 digest (64 hex digits)".to_string())?;
        Ok(Manifest {
            data_device: file_name("data_device", &v["data_device"])?,
            hash_device: file_name("hash_device", &v["hash_device"])?,
            root_hash,
            salt: hex_field("salt", &v["salt"], 256)?,
            uuid: v
                .get("uuid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    pub fn to_value(&self) -> Value {
        json!({
            "type": "dm-verity",
            "data_device": self.data_device,
            "hash_device": self.hash_device,
            "root_hash": hex::encode(self.root_hash),
            "salt": hex::encode(&self.salt),
            "uuid": self.uuid,
        })
    }
}

/// The object keys of `state` that dm-verity protects (each `dm:` root
/// volume or run.json volume, and its hash device): the kernel checks them block by block as
/// they are read, so hashing them whole before a boot is not needed —
/// Pantavisor's lazy verification.
pub fn protected_keys(state: &crate::State) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for (name, run) in state.containers() {
        let images = std::iter::once(&run.root_volume).chain(run.volumes.iter().flatten());
        for volume in images.filter_map(|v| v.strip_prefix("dm:")) {
            let Some(m) = state
                .get(&manifest_key(name, volume))
                .and_then(|e| Manifest::parse(&e.to_value()).ok())
            else {
                continue;
            };
            keys.insert(format!("{name}/{volume}"));
            keys.insert(format!("{name}/{}", m.hash_device));
        }
    }
    keys
}

/// What a hash device's superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub hash_type: u32,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
    pub uuid: [u8; 16],
}

impl Superblock {
    /// Read the superblock at the start of a hash device.
    pub fn parse(b: &[u8]) -> Result<Superblock, String> {
        if b.len() < 512 || &b[..8] != SUPERBLOCK_MAGIC {
            return Err("the hash device has no verity superblock".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if u32_at(8) != 1 {
            return Err(format!("verity superblock version {} is not 1", u32_at(8)));
        }
        let algorithm: String = b[32..64]
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as char)
            .collect();
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&b[72..80]);
        let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_size > 256 {
            return Err(format!("verity superblock: salt of {salt_size} bytes"));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let sb = Superblock {
            hash_type: u32_at(12),
            algorithm,
            data_block_size: u32_at(64),
            hash_block_size: u32_at(68),
            data_blocks: u64::from_le_bytes(blocks),
            salt: b[88..88 + salt_size].to_vec(),
            uuid,
        };
        let pow2 = |n: u32| (512..=1 << 20).contains(&n) && n.is_power_of_two();
        if !pow2(sb.data_block_size) || !pow2(sb.hash_block_size) {
            return Err("verity superblock: block sizes are not powers of two".into());
        }
        if sb.hash_type != 1 {
            return Err(format!(
                "verity hash type {} is not supported (1, as veritysetup makes)",
                sb.hash_type
            ));
        }
        if sb.algorithm != "sha256" {
            return Err(format!(
                "verity hash algorithm {} is not supported (sha256)",
                sb.algorithm
            ));
        }
        Ok(sb)
    }

    fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..8].copy_from_slice(SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..32 + self.algorithm.len()].copy_from_slice(self.algorithm.as_bytes());
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        b
    }

    /// The device-mapper `verity` target's parameters for this tree, the
    /// data and hash devices given as `MAJOR:MINOR` or paths: the hash tree
    /// starts one hash block in, after the superblock.
    pub fn table(&self, data_dev: &str, hash_dev: &str, root_hash: &[u8; 32]) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        };
        format!(
            "1 {data_dev} {hash_dev} {} {} {} 1 {} {} {salt}",
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.algorithm,
            hex::encode(root_hash),
        )
    }

    /// Size in bytes of the data the tree covers.
    pub fn data_bytes(&self) -> u64 {
        self.data_blocks * self.data_block_size as u64
    }
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// A hash tree for `data`, whose length must be a positive multiple of
/// 4 KiB (mksquashfs pads its images to that): the hash device's bytes and
/// the volume's manifest. Salt and uuid derive from `seed` (the data's
/// object id), so the same data always gives the same tree. One pass; the
/// data is not kept.
pub fn build(
    data: &mut impl Read,
    seed: &[u8],
    data_device: &str,
    hash_device: &str,
) -> Result<(Vec<u8>, Manifest), String> {
    let derive = |what: &[u8]| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(what);
        h.update(seed);
        h.finalize().into()
    };
    let salt = derive(b"pvroot dm-verity salt").to_vec();
    let mut uuid: [u8; 16] = derive(b"pvroot dm-verity uuid")[..16]
        .try_into()
        .unwrap_or([0; 16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut block = vec![0u8; BLOCK];
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            let n = match data.read(&mut block[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{data_device}: read: {e}")),
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if filled < BLOCK {
            return Err(format!(
                "{data_device}: its size is not a multiple of {BLOCK} bytes (mksquashfs pads to it; -nopad does not)"
            ));
        }
        hashes.push(salted(&salt, &block));
    }
    if hashes.is_empty() {
        return Err(format!("{data_device}: empty"));
    }
    let data_blocks = hashes.len() as u64;
    // Levels bottom-up; each a run of hash blocks of 128 digests, zero
    // padded. One data block needs no level: its digest is the root.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let root = if hashes.len() == 1 {
        hashes[0]
    } else {
        loop {
            let per = BLOCK / 32;
            let mut level = Vec::with_capacity(hashes.len().div_ceil(per) * BLOCK);
            for chunk in hashes.chunks(per) {
                for h in chunk {
                    level.extend_from_slice(h);
                }
                level.resize(level.len().div_ceil(BLOCK) * BLOCK, 0);
            }
            hashes = level.chunks(BLOCK).map(|b| salted(&salt, b)).collect();
            levels.push(level);
            if hashes.len() == 1 {
                break hashes[0];
            }
        }
    };
    let sb = Superblock {
        hash_type: 1,
        algorithm: "sha256".into(),
        data_block_size: BLOCK as u32,
        hash_block_size: BLOCK as u32,
        data_blocks,
        salt: salt.clone(),
        uuid,
    };
    let mut device = sb.to_bytes().to_vec();
    device.resize(BLOCK, 0);
    for level in levels.iter().rev() {
        device.extend_from_slice(level);
    }
    let h = hex::encode(uuid);
    let manifest = Manifest {
        data_device: data_device.into(),
        hash_device: hash_device.into(),
        root_hash: root,
        salt,
        uuid: format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        ),
    };
    Ok((device, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_round_trips_through_its_superblock() {
        let data: Vec<u8> = (0..BLOCK * 300).map(|i| (i % 251) as u8).collect();
        let (dev, m) = build(
            &mut &data[..],
            b"seed",
            "root.squashfs",
            "root.squashfs.hash",
        )
        .unwrap();
        let sb = Superblock::parse(&dev).unwrap();
        assert_eq!(sb.data_blocks, 300);
        assert_eq!(sb.salt, m.salt);
        // 300 blocks: level 0 takes 3 hash blocks, level 1 one.
        assert_eq!(dev.len(), BLOCK * (1 + 1 + 3));
        assert_eq!(Manifest::parse(&m.to_value()).unwrap(), m);
        // The same data, the same tree; other data, another root.
        let (dev2, m2) = build(
            &mut &data[..],
            b"seed",
            "root.squashfs",
            "root.squashfs.hash",
        )
        .unwrap();
        assert_eq!((dev, &m), (dev2, &m2));
        let mut other = data.clone();
        other[5000] ^= 1;
        let (_, m3) = build(
            &mut &other[..],
            b"seed",
            "root.squashfs",
            "root.squashfs.hash",
        )
        .unwrap();
        assert_ne!(m3.root_hash, m.root_hash);
        assert!(sb
            .table("7:0", "7:1", &m.root_hash)
            .starts_with("1 7:0 7:1 4096 4096 300 1 sha256 "));
    }

    #[test]
    fn a_manifest_as_pantavisor_states_carry_it_parses() {
        // The form of `pvr-sdk/_dm/root.squashfs.json` in Pantavisor's own
        // test states (test/pvtx/resources/initial_state.json).
        let v = json!({
            "data_device": "root.squashfs",
            "hash_device": "root.squashfs.hash",
            "root_hash": "2b95173c2fba9391e7e5fc441a7ef54265b4dcc0f70392fc9089f340c57e5b3c",
            "salt": "64440fb2cd2374345715ed8fa574e5b798d97b30b8d90d79d70012f4ac97462b",
            "type": "dm-verity",
            "uuid": "125e28bb-90af-4d13-b72b-c14549476299"
        });
        let m = Manifest::parse(&v).unwrap();
        assert_eq!(m.hash_device, "root.squashfs.hash");
        assert_eq!(hex::encode(m.root_hash), v["root_hash"].as_str().unwrap());
        assert_eq!(m.to_value(), v);
    }

    #[test]
    fn bad_input_and_manifests_are_refused_with_the_reason() {
        let e = build(&mut &[0u8; 5000][..], b"s", "d", "h").unwrap_err();
        assert!(e.contains("not a multiple of 4096"), "{e}");
        assert!(build(&mut &[][..], b"s", "d", "h")
            .unwrap_err()
            .contains("empty"));
        for (v, needle) in [
            (json!([]), "not a JSON object"),
            (json!({"type": "dm-crypt"}), "not dm-verity"),
            (json!({"type": "dm-verity", "root_hash": "zz"}), "root_hash"),
            (
                json!({"type": "dm-verity", "root_hash": "00".repeat(32), "data_device": "../x", "hash_device": "h", "salt": ""}),
                "not a file name",
            ),
        ] {
            let e = Manifest::parse(&v).unwrap_err();
            assert!(e.contains(needle), "{v}: {e}");
        }
        assert!(Superblock::parse(&[0u8; 512]).is_err());
    }
}

//! `adapter.toml`: the broker, and per slave its address, poll period and
//! register map. Unknown keys are errors.
//!
//! ```toml
//! broker = "127.0.0.1:1883"
//! topic_prefix = "sensors"
//!
//! [[slave]]
//! name = "plc1"
//! address = "192.168.1.10:502"
//! unit = 1
//! poll_ms = 1000
//!
//! [[slave.point]]
//! name = "temperature"
//! table = "input"            # or "holding"
//! register = 0
//! type = "i16"               # u16 i16 u32 i32 f32
//! scale = 0.1
//! offset = 0.0
//! byte_order = "big"         # "little": bytes swapped in each register
//! word_order = "big"         # "little": low word first
//! ```
//! Values are published to `<topic_prefix>/<slave>/<point>`.

use serde::Deserialize;

use crate::decode::{ByteOrder, DataType, WordOrder};
use crate::frame::{MAX_READ, READ_HOLDING, READ_INPUT};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_broker")]
    pub broker: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default, rename = "slave")]
    pub slaves: Vec<Slave>,
}

fn default_broker() -> String {
    "127.0.0.1:1883".into()
}
fn default_prefix() -> String {
    "sensors".into()
}
fn default_unit() -> u8 {
    1
}
fn default_poll() -> u64 {
    1000
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Slave {
    pub name: String,
    /// HOST:PORT of a Modbus TCP slave.
    pub address: String,
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    #[serde(default, rename = "point")]
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Holding,
    Input,
}

impl Table {
    pub fn function(self) -> u8 {
        match self {
            Table::Holding => READ_HOLDING,
            Table::Input => READ_INPUT,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub name: String,
    pub table: Table,
    pub register: u16,
    #[serde(rename = "type")]
    pub ty: DataType,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub byte_order: ByteOrder,
    #[serde(default)]
    pub word_order: WordOrder,
}

/// One read request covering several points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indexes into the slave's points.
    pub points: Vec<usize>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = std::collections::BTreeSet::new();
        for s in &c.slaves {
            if !names.insert(&s.name) {
                return Err(format!("slave {} is defined twice", s.name));
            }
            if s.poll_ms < 10 {
                return Err(format!(
                    "slave {}: poll_ms {} is below 10",
                    s.name, s.poll_ms
                ));
            }
            let mut points = std::collections::BTreeSet::new();
            for p in &s.points {
                if !points.insert(&p.name) {
                    return Err(format!(
                        "slave {}: point {} is defined twice",
                        s.name, p.name
                    ));
                }
                if p.register as u32 + p.ty.registers() as u32 > 0x10000 {
                    return Err(format!(
                        "slave {}: point {} runs past register 65535",
                        s.name, p.name
                    ));
                }
            }
        }
        Ok(c)
    }
}

impl Slave {
    /// Group the points into as few reads as possible: per table, runs of
    /// registers with gaps of at most `max_gap` unused ones, at most 125 long.
    pub fn blocks(&self, max_gap: u16) -> Vec<Block> {
        let mut order: Vec<usize> = (0..self.points.len()).collect();
        order.sort_by_key(|&i| (self.points[i].table, self.points[i].register));
        let mut blocks: Vec<Block> = Vec::new();
        for i in order {
            let p = &self.points[i];
            let end = p.register + p.ty.registers();
            match blocks.last_mut() {
                Some(b)
                    if b.table == p.table
                        && p.register <= b.start + b.count + max_gap
                        && end - b.start <= MAX_READ =>
                {
                    b.count = b.count.max(end - b.start);
                    b.points.push(i);
                }
                _ => blocks.push(Block {
                    table: p.table,
                    start: p.register,
                    count: end - p.register,
                    points: vec![i],
                }),
            }
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
[[slave]]
name = "plc1"
address = "127.0.0.1:5020"
[[slave.point]]
name = "temperature"
table = "input"
register = 0
type = "i16"
scale = 0.1
[[slave.point]]
name = "flow"
table = "input"
register = 2
type = "f32"
word_order = "little"
[[slave.point]]
name = "setpoint"
table = "holding"
register = 10
type = "u16"
[[slave.point]]
name = "far"
table = "input"
register = 200
type = "u32"
"#;

    #[test]
    fn parses_and_groups_reads() {
        let c = Config::parse(MAP).unwrap();
        let s = &c.slaves[0];
        assert_eq!(
            (s.unit, s.poll_ms, c.topic_prefix.as_str()),
            (1, 1000, "sensors")
        );
        assert_eq!(s.points[1].word_order, WordOrder::Little);
        let blocks = s.blocks(4);
        assert_eq!(
            blocks,
            vec![
                Block {
                    table: Table::Holding,
                    start: 10,
                    count: 1,
                    points: vec![2]
                },
                Block {
                    table: Table::Input,
                    start: 0,
                    count: 4,
                    points: vec![0, 1]
                },
                Block {
                    table: Table::Input,
                    start: 200,
                    count: 2,
                    points: vec![3]
                },
            ]
        );
        for (bad, why) in [
            ("[[slave]]\nname = \"a\"\naddress = \"x:1\"\npoll_ms = 1", "below 10"),
            ("[[slave]]\nname = \"a\"\naddress = \"x:1\"\n[[slave]]\nname = \"a\"\naddress = \"y:1\"", "twice"),
            ("[[slave]]\nname = \"a\"\naddress = \"x:1\"\n[[slave.point]]\nname = \"p\"\ntable = \"coil\"\nregister = 0\ntype = \"u16\"", "unknown variant"),
            ("[[slave]]\nname = \"a\"\naddress = \"x:1\"\n[[slave.point]]\nname = \"p\"\ntable = \"input\"\nregister = 65535\ntype = \"u32\"", "past register"),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

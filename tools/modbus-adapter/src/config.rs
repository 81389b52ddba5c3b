//! `adapter.toml`: the broker, and per slave its address, poll period and
//! register map. Unknown keys are errors.
//!
//! ```toml
//! broker = "127.0.0.1:1883"
//! topic_prefix = "sensors"
//! api = "/run/modbus-adapter/api.sock" # optional: GET /metrics over HTTP on
//!                                      # a unix socket (an xconnect rest service)
//!
//! [[slave]]
//! name = "plc1"
//! address = "192.168.1.10:502"  # Modbus TCP, or a serial line (RTU):
//! # serial = "/dev/ttyS1"        # slaves on one line share it, polled in turn
//! # baud = 19200                 # 1200 … 230400
//! # parity = "even"              # "odd", "none"
//! # stop_bits = 1                # default 1 with parity, 2 without
//! # timeout_ms = 1000            # an RTU answer's deadline
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
use crate::serial::{valid_baud, LineSettings, Parity};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_broker")]
    pub broker: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// A unix socket to serve `GET /metrics` on (HTTP/1.1).
    #[serde(default)]
    pub api: Option<String>,
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
    #[serde(default)]
    pub address: Option<String>,
    /// The serial device of a Modbus RTU slave.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<Parity>,
    #[serde(default)]
    pub stop_bits: Option<u8>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
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
            s.link()?;
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
        // Slaves on one serial line: one set of line settings, distinct units.
        let mut lines: std::collections::BTreeMap<&str, (LineSettings, Vec<u8>)> =
            Default::default();
        for s in &c.slaves {
            if let Ok(Link::Rtu { path, line, .. }) = s.link() {
                let (first, units) = lines.entry(path).or_insert((line, Vec::new()));
                if *first != line {
                    return Err(format!(
                        "slave {}: {path} is set up as {} by another slave, not {}",
                        s.name,
                        first.describe(),
                        line.describe()
                    ));
                }
                if units.contains(&s.unit) {
                    return Err(format!(
                        "slave {}: unit {} is used twice on {path}",
                        s.name, s.unit
                    ));
                }
                units.push(s.unit);
            }
        }
        Ok(c)
    }
}

/// How a slave is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link<'a> {
    Tcp(&'a str),
    Rtu {
        path: &'a str,
        line: LineSettings,
        timeout_ms: u64,
    },
}

impl Slave {
    /// Its link, checked: a TCP address or a serial line, not both.
    pub fn link(&self) -> Result<Link<'_>, String> {
        let serial_keys = self.baud.is_some()
            || self.parity.is_some()
            || self.stop_bits.is_some()
            || self.timeout_ms.is_some();
        match (&self.address, &self.serial) {
            (Some(a), None) => {
                if serial_keys {
                    return Err(format!(
                        "slave {}: baud, parity, stop_bits and timeout_ms are for a serial slave",
                        self.name
                    ));
                }
                Ok(Link::Tcp(a))
            }
            (None, Some(path)) => {
                let baud = self.baud.unwrap_or(19_200);
                if !valid_baud(baud) {
                    return Err(format!(
                        "slave {}: baud {baud} is not a standard rate (1200 … 230400)",
                        self.name
                    ));
                }
                let parity = self.parity.unwrap_or_default();
                let stop_bits =
                    self.stop_bits
                        .unwrap_or(if parity == Parity::None { 2 } else { 1 });
                if !(1..=2).contains(&stop_bits) {
                    return Err(format!("slave {}: stop_bits must be 1 or 2", self.name));
                }
                if self.unit == 0 || self.unit > 247 {
                    return Err(format!(
                        "slave {}: unit {} on a serial line must be 1 … 247",
                        self.name, self.unit
                    ));
                }
                Ok(Link::Rtu {
                    path,
                    line: LineSettings {
                        baud,
                        parity,
                        stop_bits,
                    },
                    timeout_ms: self.timeout_ms.unwrap_or(1000),
                })
            }
            (Some(_), Some(_)) => Err(format!(
                "slave {}: give address (Modbus TCP) or serial (RTU), not both",
                self.name
            )),
            (None, None) => Err(format!(
                "slave {}: no address (Modbus TCP) or serial (RTU) device",
                self.name
            )),
        }
    }

    /// Where it is, for messages.
    pub fn place(&self) -> String {
        match self.link() {
            Ok(Link::Tcp(a)) => a.to_string(),
            Ok(Link::Rtu { path, line, .. }) => {
                format!("{path} {} unit {}", line.describe(), self.unit)
            }
            Err(e) => e,
        }
    }

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
        assert_eq!(s.link(), Ok(Link::Tcp("127.0.0.1:5020")));
        let rtu = Config::parse(
            "[[slave]]\nname = \"meter\"\nserial = \"/dev/ttyUSB0\"\nunit = 7\nparity = \"none\"\nbaud = 9600\n\
             [[slave]]\nname = \"meter2\"\nserial = \"/dev/ttyUSB0\"\nunit = 8\nparity = \"none\"\nbaud = 9600\n",
        )
        .unwrap();
        assert_eq!(
            rtu.slaves[0].link(),
            Ok(Link::Rtu {
                path: "/dev/ttyUSB0",
                line: LineSettings {
                    baud: 9600,
                    parity: Parity::None,
                    stop_bits: 2
                },
                timeout_ms: 1000
            })
        );
        assert_eq!(rtu.slaves[1].place(), "/dev/ttyUSB0 9600 8N2 unit 8");
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
            ("[[slave]]\nname = \"a\"", "no address"),
            ("[[slave]]\nname = \"a\"\naddress = \"x:1\"\nserial = \"/dev/ttyS1\"", "not both"),
            ("[[slave]]\nname = \"a\"\naddress = \"x:1\"\nbaud = 9600", "are for a serial slave"),
            ("[[slave]]\nname = \"a\"\nserial = \"/dev/ttyS1\"\nbaud = 1000", "not a standard rate"),
            ("[[slave]]\nname = \"a\"\nserial = \"/dev/ttyS1\"\nparity = \"mark\"", "unknown variant"),
            ("[[slave]]\nname = \"a\"\nserial = \"/dev/ttyS1\"\nunit = 0", "1 … 247"),
            ("[[slave]]\nname = \"a\"\nserial = \"/dev/ttyS1\"\n[[slave]]\nname = \"b\"\nserial = \"/dev/ttyS1\"", "unit 1 is used twice on /dev/ttyS1"),
            ("[[slave]]\nname = \"a\"\nserial = \"/dev/ttyS1\"\n[[slave]]\nname = \"b\"\nunit = 2\nserial = \"/dev/ttyS1\"\nbaud = 9600", "set up as 19200 8E1 by another slave, not 9600 8E1"),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

//! Registers to values: 16-bit registers combined into 32-bit integers or
//! IEEE floats with the device's byte order (within a register) and word
//! order (of the registers), then scaled: `raw * scale + offset`.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl DataType {
    /// Registers a value of this type takes.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            _ => 2,
        }
    }
}

/// Order of the two bytes in a register ("big": Modbus's own).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    #[default]
    Big,
    Little,
}

/// Order of the registers of a 32-bit value ("big": high word first).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    #[default]
    Big,
    Little,
}

/// The raw value of `regs` (at least `ty.registers()` of them).
pub fn raw(regs: &[u16], ty: DataType, bytes: ByteOrder, words: WordOrder) -> Option<f64> {
    let fix = |r: u16| match bytes {
        ByteOrder::Big => r,
        ByteOrder::Little => r.swap_bytes(),
    };
    let n = ty.registers() as usize;
    if regs.len() < n {
        return None;
    }
    let word32 = || {
        let (hi, lo) = match words {
            WordOrder::Big => (fix(regs[0]), fix(regs[1])),
            WordOrder::Little => (fix(regs[1]), fix(regs[0])),
        };
        ((hi as u32) << 16) | lo as u32
    };
    Some(match ty {
        DataType::U16 => fix(regs[0]) as f64,
        DataType::I16 => fix(regs[0]) as i16 as f64,
        DataType::U32 => word32() as f64,
        DataType::I32 => word32() as i32 as f64,
        DataType::F32 => f32::from_bits(word32()) as f64,
    })
}

/// Scaled engineering value.
pub fn scaled(raw: f64, scale: f64, offset: f64) -> f64 {
    raw * scale + offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use ByteOrder as B;
    use DataType as T;
    use WordOrder as W;

    #[test]
    fn types_and_orders() {
        assert_eq!(raw(&[0xfff6], T::U16, B::Big, W::Big), Some(65526.0));
        assert_eq!(raw(&[0xfff6], T::I16, B::Big, W::Big), Some(-10.0));
        assert_eq!(raw(&[0xf6ff], T::I16, B::Little, W::Big), Some(-10.0));
        // 0x0001_0002 = 65538
        assert_eq!(
            raw(&[0x0001, 0x0002], T::U32, B::Big, W::Big),
            Some(65538.0)
        );
        assert_eq!(
            raw(&[0x0002, 0x0001], T::U32, B::Big, W::Little),
            Some(65538.0)
        );
        assert_eq!(
            raw(&[0x0100, 0x0200], T::U32, B::Little, W::Big),
            Some(65538.0)
        );
        assert_eq!(raw(&[0xffff, 0xfffe], T::I32, B::Big, W::Big), Some(-2.0));
        // 21.5f32 = 0x41AC0000
        assert_eq!(raw(&[0x41ac, 0x0000], T::F32, B::Big, W::Big), Some(21.5));
        assert_eq!(
            raw(&[0x0000, 0x41ac], T::F32, B::Big, W::Little),
            Some(21.5)
        );
        assert_eq!(
            raw(&[0xac41, 0x0000], T::F32, B::Little, W::Big),
            Some(21.5)
        );
        assert_eq!(
            raw(&[0x41ac], T::F32, B::Big, W::Big),
            None,
            "one register short"
        );
        assert_eq!(scaled(215.0, 0.1, -5.0), 16.5);
    }
}

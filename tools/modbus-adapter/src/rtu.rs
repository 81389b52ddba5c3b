//! Modbus RTU framing (serial lines, RS-485/RS-232): unit address, PDU and a
//! CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF, low byte first).
//! Frames carry no length: it follows from the function code and, for
//! variable ones, a byte count, which differs between requests and answers.
//! Frames are separated by at least 3.5 character times of silence.

use crate::frame::{FrameError, READ_HOLDING, READ_INPUT, WRITE_MULTIPLE, WRITE_SINGLE};

/// CRC-16/MODBUS of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The RTU frame for `unit` and `pdu`.
pub fn encode(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 3);
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Which side sent the frame (it decides how long a frame is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A request from the master (the adapter).
    Master,
    /// An answer from a slave.
    Slave,
}

/// The length of the frame at the start of `buf` (address through CRC), or
/// Incomplete when more bytes are needed to tell.
fn frame_len(buf: &[u8], from: From) -> Result<usize, FrameError> {
    let (Some(&function), true) = (buf.get(1), buf.len() >= 2) else {
        return Err(FrameError::Incomplete);
    };
    let byte = |i: usize| buf.get(i).copied().ok_or(FrameError::Incomplete);
    Ok(match (from, function) {
        (From::Slave, f) if f & 0x80 != 0 => 5,
        (From::Master, READ_HOLDING | READ_INPUT | WRITE_SINGLE) => 8,
        (From::Master, WRITE_MULTIPLE) => 9 + byte(6)? as usize,
        (From::Slave, READ_HOLDING | READ_INPUT) => 5 + byte(2)? as usize,
        (From::Slave, WRITE_SINGLE | WRITE_MULTIPLE) => 8,
        (_, f) => {
            return Err(FrameError::Invalid(format!(
                "function {f} is not one this link speaks"
            )))
        }
    })
}

/// One frame from the start of `buf`: (unit, PDU, bytes used). A frame whose
/// CRC does not match is Invalid: the line was disturbed, and the caller
/// drops what it has once the line is silent.
pub fn decode(buf: &[u8], from: From) -> Result<(u8, Vec<u8>, usize), FrameError> {
    let len = frame_len(buf, from)?;
    if buf.len() < len {
        return Err(FrameError::Incomplete);
    }
    let (body, crc) = buf[..len].split_at(len - 2);
    let got = u16::from_le_bytes([crc[0], crc[1]]);
    let want = crc16(body);
    if got != want {
        return Err(FrameError::Invalid(format!(
            "CRC {got:04x}, expected {want:04x}"
        )));
    }
    Ok((body[0], body[1..].to_vec(), len))
}

/// Character time in microseconds for `baud` with 11 bits per character
/// (start, 8 data, parity or second stop, stop).
pub fn char_us(baud: u32) -> u64 {
    11_000_000 / baud.max(1) as u64
}

/// The silence that ends a frame: 3.5 characters, and 1750 µs above 19200
/// baud (as the specification fixes it for fast lines).
pub fn frame_gap_us(baud: u32) -> u64 {
    if baud > 19_200 {
        1_750
    } else {
        38_500_000 / baud.max(1) as u64 // 3.5 × 11 bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::read_request;

    #[test]
    fn crc_matches_the_specifications_examples() {
        // "Read holding registers 0x006B, 3 registers, slave 0x11": the
        // Modbus over serial line guide's example frame ends 76 87.
        let f = encode(0x11, &read_request(READ_HOLDING, 0x006B, 3));
        assert_eq!(f, [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
        // CRC-16/MODBUS check value of "123456789".
        assert_eq!(crc16(b"123456789"), 0x4B37);
    }

    #[test]
    fn frames_are_delimited_by_function_and_checked() {
        let req = encode(1, &read_request(READ_INPUT, 0, 2));
        assert_eq!(decode(&req[..5], From::Master), Err(FrameError::Incomplete));
        assert_eq!(
            decode(&req, From::Master),
            Ok((1, read_request(READ_INPUT, 0, 2), 8))
        );
        // An answer with two registers, followed by the next frame's start.
        let mut answer = encode(1, &[4, 4, 0, 0xC8, 0x03, 0xF5]);
        answer.extend_from_slice(&[1, 4]);
        assert_eq!(
            decode(&answer, From::Slave),
            Ok((1, vec![4, 4, 0, 0xC8, 0x03, 0xF5], 9))
        );
        let exc = encode(7, &[0x83, 2]);
        assert_eq!(decode(&exc, From::Slave), Ok((7, vec![0x83, 2], 5)));
        let write = encode(1, &[16, 0, 100, 0, 1, 2, 0, 5]);
        assert_eq!(decode(&write, From::Master).unwrap().2, 11);
        assert_eq!(
            decode(&write[..6], From::Master),
            Err(FrameError::Incomplete)
        );
        // A disturbed bit fails the CRC.
        let mut bad = req.clone();
        bad[3] ^= 0x10;
        assert!(
            matches!(decode(&bad, From::Master), Err(FrameError::Invalid(m)) if m.contains("CRC"))
        );
        assert!(matches!(
            decode(&[1, 0x2b, 0, 0], From::Master),
            Err(FrameError::Invalid(_))
        ));
    }

    #[test]
    fn silence_between_frames() {
        assert_eq!(frame_gap_us(9600), 4010);
        assert_eq!(frame_gap_us(19_200), 2005);
        assert_eq!(char_us(9600), 1145);
        assert_eq!(frame_gap_us(115_200), 1750);
    }
}

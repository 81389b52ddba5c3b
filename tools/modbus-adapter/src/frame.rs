//! Modbus TCP: the MBAP header (transaction, protocol 0, length, unit) and
//! the PDUs of functions 3 (read holding registers), 4 (read input
//! registers), 6 (write single register) and 16 (write multiple registers),
//! with exception answers. Used by the adapter (client) and the simulator
//! (server).

pub const READ_HOLDING: u8 = 3;
pub const READ_INPUT: u8 = 4;
pub const WRITE_SINGLE: u8 = 6;
pub const WRITE_MULTIPLE: u8 = 16;

/// Exception codes.
pub const ILLEGAL_FUNCTION: u8 = 1;
pub const ILLEGAL_ADDRESS: u8 = 2;
pub const ILLEGAL_VALUE: u8 = 3;

/// At most this many registers in one read (the protocol's limit).
pub const MAX_READ: u16 = 125;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub transaction: u16,
    pub unit: u8,
    /// Function code and data.
    pub pdu: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More bytes are needed.
    Incomplete,
    Invalid(String),
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.pdu.len());
        out.extend_from_slice(&self.transaction.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&((self.pdu.len() + 1) as u16).to_be_bytes());
        out.push(self.unit);
        out.extend_from_slice(&self.pdu);
        out
    }

    /// One frame from the start of `buf`, and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
        if buf.len() < 7 {
            return Err(FrameError::Incomplete);
        }
        let protocol = u16::from_be_bytes([buf[2], buf[3]]);
        if protocol != 0 {
            return Err(FrameError::Invalid(format!(
                "protocol id {protocol}, not Modbus (0)"
            )));
        }
        let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
        if !(2..=254).contains(&len) {
            return Err(FrameError::Invalid(format!("length {len}")));
        }
        if buf.len() < 6 + len {
            return Err(FrameError::Incomplete);
        }
        Ok((
            Frame {
                transaction: u16::from_be_bytes([buf[0], buf[1]]),
                unit: buf[6],
                pdu: buf[7..6 + len].to_vec(),
            },
            6 + len,
        ))
    }
}

/// The request PDU to read `count` registers from `address`.
pub fn read_request(function: u8, address: u16, count: u16) -> Vec<u8> {
    let mut p = vec![function];
    p.extend_from_slice(&address.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The slave answered with an exception code.
    Exception(u8),
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ReadError::Exception(c) => write!(
                f,
                "exception {c} ({})",
                match *c {
                    ILLEGAL_FUNCTION => "illegal function",
                    ILLEGAL_ADDRESS => "illegal data address",
                    ILLEGAL_VALUE => "illegal data value",
                    4 => "slave device failure",
                    6 => "slave device busy",
                    _ => "other",
                }
            ),
            ReadError::Malformed(m) => write!(f, "malformed answer: {m}"),
        }
    }
}

/// The registers of a read answer to `function` for `count` registers.
pub fn read_response(pdu: &[u8], function: u8, count: u16) -> Result<Vec<u16>, ReadError> {
    match pdu {
        [f, code] if *f == function | 0x80 => Err(ReadError::Exception(*code)),
        [f, n, data @ ..] if *f == function => {
            if *n as usize != data.len() || data.len() != 2 * count as usize {
                return Err(ReadError::Malformed(format!(
                    "{} data bytes for {count} registers",
                    data.len()
                )));
            }
            Ok(data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect())
        }
        _ => Err(ReadError::Malformed(format!("function {:?}", pdu.first()))),
    }
}

/// What a server holds: holding and input registers from address 0.
pub trait Registers {
    fn holding(&self) -> &[u16];
    fn input(&self) -> &[u16];
    fn write_holding(&mut self, address: u16, values: &[u16]) -> bool;
}

/// Holding and input registers in memory, from address 0; a write past the
/// holding table's end is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterTable {
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
}

impl Registers for RegisterTable {
    fn holding(&self) -> &[u16] {
        &self.holding
    }
    fn input(&self) -> &[u16] {
        &self.input
    }
    fn write_holding(&mut self, address: u16, values: &[u16]) -> bool {
        let a = address as usize;
        if a + values.len() > self.holding.len() {
            return false;
        }
        self.holding[a..a + values.len()].copy_from_slice(values);
        true
    }
}

/// The answer PDU a server gives to a request PDU.
pub fn serve(request: &[u8], regs: &mut dyn Registers) -> Vec<u8> {
    let Some(&function) = request.first() else {
        return vec![0x80, ILLEGAL_FUNCTION];
    };
    let exception = |code: u8| vec![function | 0x80, code];
    let word = |i: usize| {
        request
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    match function {
        READ_HOLDING | READ_INPUT => {
            let (Some(address), Some(count)) = (word(1), word(3)) else {
                return exception(ILLEGAL_VALUE);
            };
            if count == 0 || count > MAX_READ {
                return exception(ILLEGAL_VALUE);
            }
            let table = if function == READ_HOLDING {
                regs.holding()
            } else {
                regs.input()
            };
            let (start, end) = (address as usize, address as usize + count as usize);
            if end > table.len() {
                return exception(ILLEGAL_ADDRESS);
            }
            let mut out = vec![function, (2 * count) as u8];
            for r in &table[start..end] {
                out.extend_from_slice(&r.to_be_bytes());
            }
            out
        }
        WRITE_SINGLE => {
            let (Some(address), Some(value)) = (word(1), word(3)) else {
                return exception(ILLEGAL_VALUE);
            };
            if !regs.write_holding(address, &[value]) {
                return exception(ILLEGAL_ADDRESS);
            }
            request[..5].to_vec()
        }
        WRITE_MULTIPLE => {
            let (Some(address), Some(count)) = (word(1), word(3)) else {
                return exception(ILLEGAL_VALUE);
            };
            let data = request.get(6..).unwrap_or(&[]);
            if count == 0
                || data.len() != 2 * count as usize
                || request.get(5) != Some(&((2 * count) as u8))
            {
                return exception(ILLEGAL_VALUE);
            }
            let values: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            if !regs.write_holding(address, &values) {
                return exception(ILLEGAL_ADDRESS);
            }
            request[..5].to_vec()
        }
        _ => exception(ILLEGAL_FUNCTION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbap_round_trip_and_partial_input() {
        let f = Frame {
            transaction: 0x1234,
            unit: 7,
            pdu: read_request(READ_HOLDING, 10, 2),
        };
        let bytes = f.encode();
        assert_eq!(bytes, [0x12, 0x34, 0, 0, 0, 6, 7, 3, 0, 10, 0, 2]);
        assert_eq!(Frame::decode(&bytes[..9]), Err(FrameError::Incomplete));
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (g, used) = Frame::decode(&two).unwrap();
        assert_eq!((g, used), (f, 12));
        let mut bad = bytes.clone();
        bad[2] = 1;
        assert!(matches!(Frame::decode(&bad), Err(FrameError::Invalid(_))));
    }

    #[test]
    fn server_answers_and_client_reads() {
        let mut t = RegisterTable {
            holding: vec![0; 10],
            input: (100..110).collect(),
        };
        let answer = serve(&read_request(READ_INPUT, 2, 3), &mut t);
        assert_eq!(
            read_response(&answer, READ_INPUT, 3),
            Ok(vec![102, 103, 104])
        );
        let answer = serve(&read_request(READ_HOLDING, 8, 3), &mut t);
        assert_eq!(
            read_response(&answer, READ_HOLDING, 3),
            Err(ReadError::Exception(ILLEGAL_ADDRESS))
        );
        assert_eq!(serve(&[0x2b, 0, 0], &mut t), vec![0xab, ILLEGAL_FUNCTION]);
        assert_eq!(
            serve(&read_request(READ_HOLDING, 0, 126), &mut t),
            vec![0x83, ILLEGAL_VALUE]
        );
        // Write single, then multiple.
        assert_eq!(
            serve(&[6, 0, 4, 0x12, 0x34], &mut t),
            vec![6, 0, 4, 0x12, 0x34]
        );
        assert_eq!(
            serve(&[16, 0, 0, 0, 2, 4, 0, 1, 0, 2], &mut t),
            vec![16, 0, 0, 0, 2]
        );
        assert_eq!(&t.holding[..5], &[1, 2, 0, 0, 0x1234]);
        assert_eq!(
            serve(&[16, 0, 0, 0, 2, 3, 0, 1, 0], &mut t),
            vec![0x90, ILLEGAL_VALUE]
        );
        // A short answer from a slave is refused.
        assert!(matches!(
            read_response(&[3, 4, 0, 1], READ_HOLDING, 2),
            Err(ReadError::Malformed(_))
        ));
    }
}

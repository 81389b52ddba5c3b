//! A serial port in raw mode (termios): baud rate, 8 data bits, parity and
//! stop bits as a Modbus RTU line needs them, and reads with a timeout.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// The Modbus default.
    #[default]
    Even,
    Odd,
    None,
}

/// How the line is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    pub baud: u32,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl LineSettings {
    pub fn describe(&self) -> String {
        let p = match self.parity {
            Parity::Even => 'E',
            Parity::Odd => 'O',
            Parity::None => 'N',
        };
        format!("{} 8{p}{}", self.baud, self.stop_bits)
    }
}

fn speed(baud: u32) -> Option<libc::tcflag_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19_200 => libc::B19200,
        38_400 => libc::B38400,
        57_600 => libc::B57600,
        115_200 => libc::B115200,
        230_400 => libc::B230400,
        _ => return None,
    })
}

/// The baud rates a line may have.
pub fn valid_baud(baud: u32) -> bool {
    speed(baud).is_some()
}

pub struct Serial {
    file: File,
    pub settings: LineSettings,
    /// When the line last carried a byte (ours or theirs).
    last_traffic: Instant,
}

impl Serial {
    pub fn open(path: &Path, settings: LineSettings) -> std::io::Result<Serial> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)?;
        let fd = file.as_raw_fd();
        let bad = |what: &str| {
            std::io::Error::other(format!("{what}: {}", std::io::Error::last_os_error()))
        };
        let rate = speed(settings.baud).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("baud rate {} is not supported", settings.baud),
            )
        })?;
        // The kernel's termios2 interface (TCGETS2/TCSETS2) directly: it
        // needs nothing of the C library's speed functions, which a static
        // build with a newer glibc cannot link.
        // SAFETY: termios2 is plain data; fd is open for the calls' duration.
        unsafe {
            let mut t: libc::termios2 = std::mem::zeroed();
            if libc::ioctl(fd, libc::TCGETS2, &mut t) != 0 {
                return Err(bad("not a serial device (TCGETS2)"));
            }
            // Raw: no line editing, echo, signals, translation or flow control.
            t.c_iflag &= !(libc::IGNBRK
                | libc::BRKINT
                | libc::PARMRK
                | libc::ISTRIP
                | libc::INLCR
                | libc::IGNCR
                | libc::ICRNL
                | libc::IXON
                | libc::IXOFF
                | libc::INPCK);
            t.c_oflag &= !libc::OPOST;
            t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
            t.c_cflag &= !(libc::CSIZE
                | libc::PARENB
                | libc::PARODD
                | libc::CSTOPB
                | libc::CRTSCTS
                | libc::CBAUD);
            t.c_cflag |= libc::CS8 | libc::CLOCAL | libc::CREAD | rate;
            match settings.parity {
                Parity::Even => t.c_cflag |= libc::PARENB,
                Parity::Odd => t.c_cflag |= libc::PARENB | libc::PARODD,
                Parity::None => {}
            }
            if settings.parity != Parity::None {
                t.c_iflag |= libc::INPCK;
            }
            if settings.stop_bits == 2 {
                t.c_cflag |= libc::CSTOPB;
            }
            t.c_ispeed = settings.baud;
            t.c_ospeed = settings.baud;
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            if libc::ioctl(fd, libc::TCSETS2, &t) != 0 {
                return Err(bad("TCSETS2"));
            }
            libc::tcflush(fd, libc::TCIOFLUSH);
        }
        Ok(Serial {
            file,
            settings,
            last_traffic: Instant::now(),
        })
    }

    /// Wait up to `timeout` for bytes; append what came. Ok(0) on timeout.
    pub fn read_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> std::io::Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        if n == 0 {
            return Ok(0);
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 && pfd.revents & libc::POLLIN == 0 {
            return Err(std::io::Error::other("the serial line hung up"));
        }
        let mut chunk = [0u8; 512];
        match self.file.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if n > 0 {
                    self.last_traffic = Instant::now();
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Read until the line has been silent for `gap` (the end of a frame, or
    /// of noise to drop); returns what came.
    pub fn drain_until_silent(&mut self, gap: Duration) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        while self.read_timeout(&mut buf, gap)? > 0 {}
        Ok(buf)
    }

    /// Drop whatever the line has delivered and nobody read (late answers,
    /// noise) before a new request.
    pub fn discard_input(&mut self) {
        // SAFETY: fd is open.
        unsafe { libc::tcflush(self.file.as_raw_fd(), libc::TCIFLUSH) };
    }

    /// Send a frame, after the silence that must precede it.
    pub fn send(&mut self, frame: &[u8], gap: Duration) -> std::io::Result<()> {
        let quiet = self.last_traffic.elapsed();
        if quiet < gap {
            std::thread::sleep(gap - quiet);
        }
        let mut rest = frame;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e),
            }
        }
        // SAFETY: fd is open.
        unsafe { libc::tcdrain(self.file.as_raw_fd()) };
        self.last_traffic = Instant::now();
        Ok(())
    }
}

//! Talking to a device: through [`pvctrl::Client`], the workspace's one
//! pv-ctrl client — its control socket (`unix:PATH` or a socket path) or its
//! remote API (`http://HOST:PORT`, with a bearer token from `--token` or
//! `PVR_TOKEN`).

use std::path::Path;

use pvctrl::{Client, Target};

use crate::error::{Error, Result};

/// The device at `target` (`unix:PATH`, `PATH` or `http://HOST:PORT[/…]`).
pub fn device(target: &str, token: Option<String>) -> Result<Client> {
    Ok(Client::new(Target::parse(target)?).with_token(token))
}

/// Stream the object file at `path` to the device; its size on success.
pub fn put_object(device: &Client, id: &pvstate::ObjectId, path: &Path) -> Result<u64> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let reply = device.call_reader("PUT", &format!("/objects/{id}"), &mut file, len)?;
    if !reply.ok() {
        return Err(Error::Remote(format!(
            "PUT /objects/{id}: {}: {}",
            reply.status,
            reply.message()
        )));
    }
    Ok(len)
}

impl From<pvctrl::Error> for Error {
    fn from(e: pvctrl::Error) -> Self {
        match e {
            pvctrl::Error::Usage(m) => Error::Usage(m),
            other => Error::Remote(other.to_string()),
        }
    }
}

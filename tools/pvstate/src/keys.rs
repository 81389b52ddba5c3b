//! Rules for state keys and the names inside them.
//!
//! A state key is a relative path inside the revision; a container name is one
//! path component. Neither may escape its directory.

/// Why `key` is not an acceptable relative path, or `None` when it is.
pub fn path_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("empty path".into());
    }
    if key.contains('\0') {
        return Some("contains a NUL character".into());
    }
    if key.starts_with('/') {
        return Some("absolute path; keys are relative to the revision".into());
    }
    if key.contains('\\') {
        return Some("contains a backslash; use '/' to separate components".into());
    }
    if key.ends_with('/') {
        return Some("ends with '/'; a key names a file".into());
    }
    for component in key.split('/') {
        match component {
            "" => return Some("contains an empty component ('//')".into()),
            "." | ".." => {
                return Some(format!(
                    "contains a '{component}' component that escapes or aliases its directory"
                ))
            }
            _ => {}
        }
    }
    None
}

/// Why `name` is not an acceptable container name, or `None` when it is.
pub fn container_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty container name".into());
    }
    if name == "." || name == ".." {
        return Some(format!("'{name}' is not a container name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')))
    {
        return Some(format!(
            "container name contains {bad:?}; allowed are letters, digits and - _ . +"
        ));
    }
    if name.starts_with('_') || name.starts_with('.') || name.starts_with('#') {
        return Some("container names may not start with '_', '.' or '#'".into());
    }
    if name == "bsp" {
        return Some("'bsp' is reserved for the board support package".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(path_problem("edge-app/run.json").is_none());
        assert!(path_problem("_config/edge-app/etc/app.conf").is_none());
        for bad in [
            "", "/etc/x", "a/../b", "..", "a//b", "a/./b", "a/", "a\0b", "a\\b",
        ] {
            assert!(path_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(container_name_problem("pv-mqtt-broker").is_none());
        assert!(container_name_problem("os_1.2").is_none());
        for bad in ["", ".", "..", "a/b", "_config", "bsp", "a b", "x\0"] {
            assert!(container_name_problem(bad).is_some(), "{bad:?} accepted");
        }
    }
}

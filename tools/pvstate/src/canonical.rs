//! Canonical JSON as pvr writes it (gibson042's "JSON Canonical Form", the
//! encoding of `canonicaljson-go`): UTF-8, no insignificant whitespace, object
//! members sorted by code point, integers without exponent, other numbers as
//! `d.dddE±n`, and only `"`, `\` and control characters escaped.
//!
//! The same state therefore always serialises to the same bytes, which is what
//! signatures and state hashes are computed over.

use serde_json::{Number, Value};

/// Serialise `value` in canonical form.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out);
    out
}

/// Serialise `value` in canonical form as a `String`.
pub fn to_string(value: &Value) -> String {
    // write_value only ever emits valid UTF-8 (input strings are UTF-8 and the
    // escapes are ASCII).
    String::from_utf8(to_vec(value)).unwrap_or_default()
}

/// Append the canonical form of `value` to `out`.
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Byte order of UTF-8 equals code point order; sort explicitly so the
            // result does not depend on serde_json's map implementation.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
        return;
    }
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
        return;
    }
    let f = n.as_f64().unwrap_or(0.0);
    out.extend_from_slice(format_float(f).as_bytes());
}

/// Format a finite float: integral values without exponent or fraction,
/// everything else in shortest round-trip exponential notation.
pub(crate) fn format_float(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    if f.fract() == 0.0 {
        // Display for f64 never uses an exponent and prints the shortest
        // digits that round-trip, e.g. 1e30 -> "1000000000000000000000000000000".
        return format!("{f}");
    }
    let s = format!("{f:E}");
    match s.find('E') {
        Some(pos) if !s[..pos].contains('.') => format!("{}.0{}", &s[..pos], &s[pos..]),
        _ => s,
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            b'\t' => Some(b"\\t"),
            b'\n' => Some(b"\\n"),
            0x0c => Some(b"\\f"),
            b'\r' => Some(b"\\r"),
            _ => None,
        };
        if escape.is_none() && b >= 0x20 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{:04X}", b).as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_the_spec_example() {
        // The example of the JSON Canonical Form specification, minus the lone
        // surrogate that serde_json (rightly, for UTF-8 text) refuses.
        let v: Value = serde_json::from_str(
            r#"{"whitespace":" \t\n\r","escape":"\u001b","emoji":"😃","10.1":10.1,"1":1,"0.1":0.1,"-1":-1,"-0":-0}"#,
        )
        .unwrap();
        assert_eq!(
            to_string(&v),
            r#"{"-0":0,"-1":-1,"0.1":1.0E-1,"1":1,"10.1":1.01E1,"emoji":"😃","escape":"\u001B","whitespace":" \t\n\r"}"#
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(format_float(2.0), "2");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(1.5), "1.5E0");
        assert_eq!(format_float(-0.25), "-2.5E-1");
        assert_eq!(format_float(1e30), "1000000000000000000000000000000");
        assert_eq!(format_float(123456.789), "1.23456789E5");
        assert_eq!(
            to_string(&json!([u64::MAX, i64::MIN])),
            "[18446744073709551615,-9223372036854775808]"
        );
    }

    #[test]
    fn strings_escape_only_what_json_requires() {
        let v = json!({"k": "a/b<c>&d\u{7f}\u{2028}\"\\\u{1}\u{8}\u{c}"});
        assert_eq!(
            to_string(&v),
            "{\"k\":\"a/b<c>&d\u{7f}\u{2028}\\\"\\\\\\u0001\\b\\f\"}"
        );
    }

    #[test]
    fn keys_sort_by_code_point_recursively() {
        let v = json!({"b": {"z": 1, "a": [ {"y": 0, "x": 0} ]}, "a": null, "B": true, "é": 1, "#spec": "x"});
        assert_eq!(
            to_string(&v),
            r##"{"#spec":"x","B":true,"a":null,"b":{"a":[{"x":0,"y":0}],"z":1},"é":1}"##
        );
    }
}

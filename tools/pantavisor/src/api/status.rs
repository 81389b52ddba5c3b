//! Domain refusals to HTTP status codes: the one table.

use crate::error::Refusal;

pub fn of(r: &Refusal) -> u16 {
    match r {
        Refusal::Invalid(_) => 400,
        Refusal::Unauthorized(_) => 401,
        Refusal::Denied(_) => 403,
        Refusal::NotFound(_) => 404,
        Refusal::NotAllowed(_) => 405,
        Refusal::Busy(_) => 409,
        Refusal::TooLarge(_) => 413,
        Refusal::WontGo(_) | Refusal::Corrupt(_) => 422,
        Refusal::NoSpace(_) => 507,
        Refusal::Failed(_) => 500,
    }
}

/// The answer to a refusal: its status and `{"Error": why}`.
pub fn response(r: &Refusal) -> Vec<u8> {
    super::http::response(of(r), &serde_json::json!({ "Error": r.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_code_and_reason() {
        for (r, code, reason) in [
            (Refusal::Invalid("x".into()), 400, "Bad Request"),
            (Refusal::Unauthorized("x".into()), 401, "Unauthorized"),
            (Refusal::Denied("x".into()), 403, "Forbidden"),
            (Refusal::NotFound("x".into()), 404, "Not Found"),
            (Refusal::NotAllowed("x".into()), 405, "Method Not Allowed"),
            (Refusal::Busy("x".into()), 409, "Conflict"),
            (Refusal::TooLarge("x".into()), 413, "Payload Too Large"),
            (Refusal::WontGo("x".into()), 422, "Unprocessable Entity"),
            (Refusal::Corrupt("x".into()), 422, "Unprocessable Entity"),
            (Refusal::NoSpace("x".into()), 507, "Insufficient Storage"),
            (Refusal::Failed("x".into()), 500, "Internal Server Error"),
        ] {
            assert_eq!(of(&r), code);
            let text = String::from_utf8(response(&r)).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {code} {reason}\r\n")),
                "{text}"
            );
        }
        assert_eq!(Refusal::WontGo("no".into()).to_string(), "WONTGO: no");
    }
}

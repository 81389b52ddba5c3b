//! The workspace's one glob matcher: fnmatch(3) for module aliases and
//! path components, and state-key patterns (`**`) for signatures.

/// fnmatch(3) without flags (as modprobe matches aliases and mksquashfs
/// matches one path component): `*`, `?` and
/// bracket expressions (ranges, `!` or `^` to negate).
pub fn fnmatch(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where the last `*` was and how much of `s` it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if let Some(&c) = pattern.get(p) {
            let step = match c {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => Some(1),
                b'[' => match bracket(&pattern[p..], s[i]) {
                    Some((true, len)) => Some(len),
                    Some((false, _)) => None,
                    // An unclosed `[` is an ordinary character.
                    None => (s[i] == b'[').then_some(1),
                },
                c => (c == s[i]).then_some(1),
            };
            if let Some(len) = step {
                p += len;
                i += 1;
                continue;
            }
        }
        match star {
            Some((sp, si)) => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The bracket expression at the start of `pattern`: whether `c` is in it,
/// and the expression's length; None when it is not closed.
fn bracket(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = matches!(pattern.get(j), Some(b'!' | b'^'));
    if negate {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let a = *pattern.get(j)?;
        if a == b']' && !first {
            break;
        }
        first = false;
        match (pattern.get(j + 1), pattern.get(j + 2)) {
            (Some(b'-'), Some(&b)) if b != b']' => {
                hit |= a <= c && c <= b;
                j += 3;
            }
            _ => {
                hit |= a == c;
                j += 1;
            }
        }
    }
    Some((hit != negate, j + 1))
}

/// Glob match of a state key: `**` matches anything, `*` and `?` stay within
/// one path component.
pub fn state_key(pattern: &str, key: &str) -> bool {
    fn go(p: &[u8], k: &[u8]) -> bool {
        match p {
            [] => k.is_empty(),
            [b'*', b'*', rest @ ..] => {
                // `**/` may also match nothing: `**/src.json` matches `src.json`.
                (0..=k.len()).any(|i| go(rest, &k[i..]))
                    || rest.strip_prefix(b"/").is_some_and(|r| go(r, k))
            }
            [b'*', rest @ ..] => (0..=k.len())
                .take_while(|&i| i == 0 || k[i - 1] != b'/')
                .any(|i| go(rest, &k[i..])),
            [b'?', rest @ ..] => !k.is_empty() && k[0] != b'/' && go(rest, &k[1..]),
            [c, rest @ ..] => k.first() == Some(c) && go(rest, &k[1..]),
        }
    }
    go(pattern.as_bytes(), key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_classes_and_stars() {
        let m = |p: &str, s: &str| fnmatch(p.as_bytes(), s.as_bytes());
        assert!(m("*.conf", "a.conf"));
        assert!(!m("*.conf", "a.confx"));
        assert!(m("lib[0-9]?", "lib3x"));
        assert!(!m("lib[!0-9]", "lib3"));
        assert!(m("[", "["));
        assert!(m("a*b*c", "aXXbYYc"));
    }

    #[test]
    fn state_keys() {
        assert!(state_key("x/**", "x/a/b"));
        assert!(state_key("**/src.json", "src.json"));
        assert!(!state_key("*", "bsp/run.json"));
    }
}

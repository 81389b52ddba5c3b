//! Fuzz the state parser and validator: no input may panic, and whatever
//! parses must survive a canonical round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvstate::{diff, State};

fuzz_target!(|data: &[u8]| {
    let Ok((state, _problems)) = State::parse_lenient(data) else {
        return;
    };
    let _ = state.validate();
    let canonical = state.to_canonical();
    let (again, _) = State::parse_lenient(&canonical).expect("canonical output must parse");
    assert_eq!(again.to_canonical(), canonical, "canonical form is not stable");
    assert!(diff::diff(&state, &again).is_empty(), "a state differs from its own round trip");
});

//! The `q` search language: parse and translate to index queries. Any string is either a
//! query or a `QueryError` (a 400 at the API).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = std::str::from_utf8(data) {
        let _ = sightline::search::check_query(q);
    }
});

//! OTLP/HTTP protobuf bodies: decode, then map every span to trace and observation changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline::otel::{Encoding, decode, map_request};
use sightline::time::Timestamp;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode(data, Encoding::Protobuf) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let mapped = map_request(&request, Timestamp::from_micros(0));
        assert!(mapped.rejected_spans <= spans as u64);
        assert!(mapped.rejected_spans == 0 || mapped.error_message.is_some());
    }
});

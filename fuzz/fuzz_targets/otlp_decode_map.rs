//! Any bytes as an OTLP/HTTP body — protobuf or JSON, gzip or not — through
//! decoding and the span mapping. Nothing may panic, and every span taken must
//! be a record the trace store accepts and reads back as it is.
#![no_main]

use custody_model::{TraceRecord, WorkspaceName};
use custody_otlp::{Encoding, decode, gunzip, map_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let encoding = if selector & 1 == 0 { Encoding::Protobuf } else { Encoding::Json };
    let body = if selector & 2 == 0 {
        body.to_vec()
    } else {
        match gunzip(body, 1 << 20) {
            Ok(inflated) => inflated,
            Err(_) => return,
        }
    };
    let Ok(request) = decode(&body, encoding) else { return };
    let fallback = WorkspaceName::parse("fuzz").expect("a valid name");
    let mapped = map_request(&request, |named| match named {
        Some(name) => WorkspaceName::parse(name),
        None => Ok(fallback.clone()),
    });
    let _ = mapped.error_message();
    for entry in mapped.entries {
        let Some(record) = entry.record else { continue };
        record.validate().expect("a mapped record validates");
        let value = serde_json::to_value(&record).expect("a record serialises");
        let again = TraceRecord::from_value(value).expect("a mapped record reads back");
        assert_eq!(again, record);
    }
});

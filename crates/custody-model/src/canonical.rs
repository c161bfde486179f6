//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! The leaf hash of every audit entry is taken over these bytes, so any two
//! implementations that agree on the JSON value agree on the hash: object members
//! sorted by their UTF-16 code units, no insignificant white space, strings escaped
//! as ECMAScript's `JSON.stringify` does, numbers in ECMAScript's shortest form.

use serde_json::Value;

/// The canonical form of `value`.
///
/// Integers beyond ±2^53 are taken as IEEE 754 doubles, as RFC 8785 requires; a
/// caller that needs larger integers must send them as strings.
pub fn to_canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) {
    // Integers within the exactly representable range print as themselves, which is
    // what the ECMAScript algorithm yields for them; skipping the float path keeps
    // the common case cheap.
    const EXACT: u64 = 1 << 53;
    if let Some(u) = n.as_u64().filter(|u| *u <= EXACT) {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT) {
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        out.extend_from_slice(format_es6_number(f).as_bytes());
    }
}

/// ECMAScript `Number.prototype.toString` for a finite double (ECMA-262 §6.1.6.1.20).
pub fn format_es6_number(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        // JSON cannot carry NaN or infinities; serde_json never produces them.
        return "0".to_owned();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    // Rust's `{:e}` prints the shortest digits that round-trip, as ECMAScript requires.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e_sign = if e < 0 { "-" } else { "+" };
        let (first, rest) = digits.split_at(1);
        if rest.is_empty() {
            format!("{first}e{e_sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{e_sign}{}", e.abs())
        }
    };
    format!("{sign}{body}")
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Copy runs that need no escaping in one go; only `"`, `\\` and control
    // characters are escaped (all ASCII, so a run never splits a UTF-8 sequence).
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0A => b"\\n",
            0x0C => b"\\f",
            0x0D => b"\\r",
            0x00..=0x1F => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_canonical_json(&v)).unwrap()
    }

    #[test]
    fn numbers_follow_the_rfc_8785_appendix_b_samples() {
        // Input doubles (as IEEE 754 bit patterns) and outputs from RFC 8785 Appendix B.
        let samples: [(u64, &str); 14] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x41b3de4355555555, "333333333.3333333"),
        ];
        for (bits, expected) in samples {
            assert_eq!(format_es6_number(f64::from_bits(bits)), expected, "{bits:#x}");
        }
        assert_eq!(format_es6_number(1e21), "1e+21");
        assert_eq!(format_es6_number(1e-7), "1e-7");
        assert_eq!(format_es6_number(4.5), "4.5");
    }

    #[test]
    fn members_sort_by_utf16_code_units_and_strings_escape_like_ecmascript() {
        // The sorting sample of RFC 8785 §3.2.3: under UTF-16 the emoji (a surrogate
        // pair, 0xD83D…) sorts between U+20AC and U+FB33, unlike under code points.
        let v = json!({"\u{20ac}": "Euro Sign", "\r": "Carriage Return", "\u{1f600}": "Smiley", "1": "One", "\u{80}": "Control", "\u{fb33}": "Hebrew"});
        assert_eq!(
            canon(v),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Smiley\",\"\u{fb33}\":\"Hebrew\"}"
        );
        assert_eq!(canon(json!("a\u{1}\u{1f}\"\\/\t")), "\"a\\u0001\\u001f\\\"\\\\/\\t\"");
    }

    #[test]
    fn nested_values_have_no_white_space() {
        let v = json!({"b": [1, true, null, {"z": 1, "a": "x"}], "a": 2.50});
        assert_eq!(canon(v), r#"{"a":2.5,"b":[1,true,null,{"a":"x","z":1}]}"#);
    }
}

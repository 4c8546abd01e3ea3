//! Personal data: detection for `EXPECT NO PII (...)` and masking UDFs.
//!
//! `pii_kind(text)` names the first kind of personal data found in a value
//! (`email`, `credit_card` (Luhn-valid 13–19 digits), `phone` (10–15 digits
//! written with separators, or 8–15 after a `+`),
//! `ip_address` (IPv4 or IPv6)) or returns NULL. Masking: `mask_email`,
//! `mask_phone` (keeps the last 4 digits), `redact` and the salted
//! pseudonym `hash_id(value, salt)` (hex SHA-256 of salt and value).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use sha2::{Digest, Sha256};

/// The kind of personal data in `text`, if any.
pub fn pii_kind(text: &str) -> Option<&'static str> {
    let tokens = text.split(|c: char| {
        c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '"' | '\'' | '(' | ')')
    });
    for token in tokens.filter(|t| !t.is_empty()) {
        let token = token.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?'));
        if is_email(token) {
            return Some("email");
        }
        if token.parse::<std::net::IpAddr>().is_ok() && (token.contains('.') || token.contains(':'))
        {
            return Some("ip_address");
        }
    }
    // Numbers may be written with separators: "4111 1111 1111 1111",
    // "+31 (20) 555-0100". Look at each stretch of digits and punctuation.
    let separators = " -.()+/";
    let mut segments = vec![];
    let mut current = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || separators.contains(c) {
            current.push(c);
        } else {
            segments.push(std::mem::take(&mut current));
        }
    }
    segments.push(current);
    for segment in segments
        .iter()
        .map(|s| s.trim_matches(|c: char| c == ' ' || c == '.'))
    {
        let digits: String = segment.chars().filter(char::is_ascii_digit).collect();
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            return Some("credit_card");
        }
        let phone = if segment.starts_with('+') {
            (8..=15).contains(&digits.len())
        } else {
            (10..=15).contains(&digits.len()) && segment.contains([' ', '-', '(', '.'])
        };
        if phone {
            return Some("phone");
        }
    }
    None
}

fn is_email(token: &str) -> bool {
    let Some((local, domain)) = token.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._%+-".contains(c))
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || ".-".contains(c))
}

/// The Luhn checksum of a digit string.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!(
                "{first}{}@{domain}",
                "*".repeat(local.chars().count().saturating_sub(1).max(1))
            )
        }
        _ => "*".repeat(email.chars().count()),
    }
}

pub fn mask_phone(phone: &str) -> String {
    let total = phone.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    phone
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 4 > total {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

pub fn hash_id(value: &str, salt: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0u8]);
    hasher.update(value.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies `f` to each (string-cast) value of the first argument; NULL stays NULL.
fn string_udf(
    name: &str,
    arguments: usize,
    f: impl Fn(&str, &[Option<String>]) -> Option<String> + Send + Sync + 'static,
) -> ScalarUDF {
    let f = Arc::new(f);
    create_udf(
        name,
        vec![DataType::Utf8; arguments],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(array) => Some(array.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let columns = args
                .iter()
                .map(|a| {
                    let array = a.to_array(rows)?;
                    let text = cast(&array, &DataType::Utf8)?;
                    Ok(text
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| DataFusionError::Internal("expected text".into()))?
                        .clone())
                })
                .collect::<Result<Vec<StringArray>>>()?;
            let out: StringArray = (0..rows)
                .map(|r| {
                    if columns[0].is_null(r) {
                        return None;
                    }
                    let rest: Vec<Option<String>> = columns[1..]
                        .iter()
                        .map(|c| (!c.is_null(r)).then(|| c.value(r).to_string()))
                        .collect();
                    f(columns[0].value(r), &rest)
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    )
}

/// `pii_kind`, `mask_email`, `mask_phone`, `redact`, `hash_id`.
pub fn pii_udfs() -> Vec<ScalarUDF> {
    vec![
        string_udf("pii_kind", 1, |v, _| pii_kind(v).map(str::to_string)),
        string_udf("mask_email", 1, |v, _| Some(mask_email(v))),
        string_udf("mask_phone", 1, |v, _| Some(mask_phone(v))),
        string_udf("redact", 1, |_, _| Some("[REDACTED]".to_string())),
        string_udf("hash_id", 2, |v, rest| {
            Some(hash_id(
                v,
                rest.first().cloned().flatten().as_deref().unwrap_or(""),
            ))
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_kind_and_leaves_ordinary_values_alone() {
        assert_eq!(pii_kind("contact: jane.doe@example.com"), Some("email"));
        assert_eq!(pii_kind("4111 1111 1111 1111"), Some("credit_card"));
        assert_eq!(pii_kind("card 4111-1111-1111-1112"), None, "fails Luhn");
        assert_eq!(pii_kind("+31 (20) 555-0100"), Some("phone"));
        assert_eq!(pii_kind("call me at 020 555 0100 tonight"), Some("phone"));
        assert_eq!(pii_kind("from 192.168.0.12 at noon"), Some("ip_address"));
        assert_eq!(pii_kind("2001:db8::1"), Some("ip_address"));
        for clean in [
            "hello world",
            "order 12345",
            "2026-11-01",
            "v1.2.3",
            "a@b",
            "3.14",
        ] {
            assert_eq!(pii_kind(clean), None, "{clean}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        assert_eq!(mask_phone("+31 20 555-0100"), "+** ** ***-0100");
        assert_eq!(hash_id("42", "salt").len(), 64);
        assert_ne!(hash_id("42", "salt"), hash_id("42", "pepper"));
        assert!(luhn("79927398713") && !luhn("79927398710"));
    }
}

//! Stateless feature functions, usable in any query and inside TRANSFORM:
//! `hash_bucket(x, n)` and `feature_cross(a, b, n)` (a stable FNV-1a bucket,
//! 0..n-1), `one_hot_index(i, n)` (a one-hot vector of width n),
//! `tokenize(text)` (lower-case words), `token_buckets(text, n)` (their
//! buckets), `hashed_tf(text, n)` (term counts per bucket),
//! `tfidf(text, n, idf)` (L2-normalized TF × IDF with fitted weights), and
//! date parts `year`, `month`, `day_of_month`, `day_of_week` (Monday = 0),
//! `day_of_year`, `week_of_year`, `hour`, `minute`, `is_weekend`.
//!
//! Sized outputs are fixed-size lists of Float64, the vector features
//! models consume; their width comes from the literal `n`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float64Array, Int64Array,
    Int64Builder, ListBuilder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::temporal::{date_part, DatePart};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int32Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// The most buckets a sized function may have.
const MAX_WIDTH: i64 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Function {
    HashBucket,
    FeatureCross,
    OneHotIndex,
    Tokenize,
    TokenBuckets,
    HashedTf,
    Tfidf,
    Date(DatePartKind),
    IsWeekend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DatePartKind {
    Year,
    Month,
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    WeekOfYear,
    Hour,
    Minute,
}

impl DatePartKind {
    fn arrow(self) -> DatePart {
        match self {
            DatePartKind::Year => DatePart::Year,
            DatePartKind::Month => DatePart::Month,
            DatePartKind::DayOfMonth => DatePart::Day,
            DatePartKind::DayOfWeek => DatePart::DayOfWeekMonday0,
            DatePartKind::DayOfYear => DatePart::DayOfYear,
            DatePartKind::WeekOfYear => DatePart::Week,
            DatePartKind::Hour => DatePart::Hour,
            DatePartKind::Minute => DatePart::Minute,
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FeatureUdf {
    name: &'static str,
    function: Function,
    signature: Signature,
}

/// Every feature function by SQL name.
fn functions() -> [(&'static str, Function); 16] {
    use DatePartKind::*;
    [
        ("hash_bucket", Function::HashBucket),
        ("feature_cross", Function::FeatureCross),
        ("one_hot_index", Function::OneHotIndex),
        ("tokenize", Function::Tokenize),
        ("token_buckets", Function::TokenBuckets),
        ("hashed_tf", Function::HashedTf),
        ("tfidf", Function::Tfidf),
        ("year", Function::Date(Year)),
        ("month", Function::Date(Month)),
        ("day_of_month", Function::Date(DayOfMonth)),
        ("day_of_week", Function::Date(DayOfWeek)),
        ("day_of_year", Function::Date(DayOfYear)),
        ("week_of_year", Function::Date(WeekOfYear)),
        ("hour", Function::Date(Hour)),
        ("minute", Function::Date(Minute)),
        ("is_weekend", Function::IsWeekend),
    ]
}

/// Every feature function, for registration on each Kiln process.
pub fn feature_udfs() -> Vec<ScalarUDF> {
    functions()
        .into_iter()
        .map(|(name, function)| {
            ScalarUDF::new_from_impl(FeatureUdf {
                name,
                function,
                signature: Signature::variadic_any(Volatility::Immutable),
            })
        })
        .collect()
}

/// Whether `name` is a stateless feature function (TRANSFORM consumes its column arguments).
pub fn is_feature_function(name: &str) -> bool {
    functions().iter().any(|(n, _)| *n == name)
}

/// 64-bit FNV-1a: stable across processes, platforms and Kiln versions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Lower-case runs of letters and digits.
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

fn bucket(text: &str, n: u64) -> i64 {
    (fnv1a(text.as_bytes()) % n) as i64
}

fn vector_field(name: &str, width: i64) -> FieldRef {
    Arc::new(Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float64, true)),
            width as i32,
        ),
        true,
    ))
}

impl FeatureUdf {
    fn arity(&self) -> (usize, &'static str) {
        match self.function {
            Function::HashBucket => (2, "hash_bucket(x, n)"),
            Function::FeatureCross => (3, "feature_cross(a, b, n)"),
            Function::OneHotIndex => (2, "one_hot_index(i, n)"),
            Function::Tokenize => (1, "tokenize(text)"),
            Function::TokenBuckets => (2, "token_buckets(text, n)"),
            Function::HashedTf => (2, "hashed_tf(text, n)"),
            Function::Tfidf => (3, "tfidf(text, n, idf)"),
            Function::Date(_) | Function::IsWeekend => (1, "f(date or timestamp)"),
        }
    }

    /// The literal width argument at `index`.
    fn width(&self, scalar: Option<&ScalarValue>) -> Result<i64> {
        let usage = self.arity().1;
        let n = scalar
            .and_then(|s| s.cast_to(&DataType::Int64).ok())
            .and_then(|s| match s {
                ScalarValue::Int64(Some(n)) => Some(n),
                _ => None,
            })
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{}: n must be a literal whole number, as in {usage}",
                    self.name
                ))
            })?;
        if !(1..=MAX_WIDTH).contains(&n) {
            return Err(DataFusionError::Plan(format!(
                "{}: n must be from 1 to {MAX_WIDTH}, got {n}",
                self.name
            )));
        }
        Ok(n)
    }
}

fn strings(value: &ColumnarValue, rows: usize) -> Result<Vec<Option<String>>> {
    let array = value.to_array(rows)?;
    let text = cast(&array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    Ok((0..rows)
        .map(|r| (!text.is_null(r)).then(|| text.value(r).to_string()))
        .collect())
}

fn scalar_width(value: &ColumnarValue, name: &str) -> Result<u64> {
    match value {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(n)) if n >= 1 => Ok(n as u64),
            _ => Err(DataFusionError::Plan(format!(
                "{name}: n must be a positive literal"
            ))),
        },
        ColumnarValue::Array(_) => Err(DataFusionError::Plan(format!(
            "{name}: n must be a literal, not a column"
        ))),
    }
}

fn vectors(rows: Vec<Option<Vec<f64>>>, width: usize) -> Result<ArrayRef> {
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut valid = Vec::with_capacity(rows.len());
    for row in &rows {
        match row {
            Some(v) => {
                values.extend_from_slice(v);
                valid.push(true);
            }
            None => {
                values.extend(std::iter::repeat_n(0.0, width));
                valid.push(false);
            }
        }
    }
    Ok(Arc::new(FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float64, true)),
        width as i32,
        Arc::new(Float64Array::from(values)),
        Some(valid.into()),
    )?))
}

impl ScalarUDFImpl for FeatureUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(format!(
            "{}'s type comes from return_field_from_args",
            self.name
        )))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let (arity, usage) = self.arity();
        if args.arg_fields.len() != arity {
            return Err(DataFusionError::Plan(format!(
                "{} takes {arity} argument(s): {usage}",
                self.name
            )));
        }
        let scalar = |i: usize| args.scalar_arguments.get(i).copied().flatten();
        let simple = |t: DataType| Ok(Arc::new(Field::new(self.name, t, true)));
        match self.function {
            Function::HashBucket | Function::TokenBuckets | Function::HashedTf => {
                let n = self.width(scalar(1))?;
                match self.function {
                    Function::HashBucket => simple(DataType::Int64),
                    Function::TokenBuckets => simple(DataType::new_list(DataType::Int64, true)),
                    _ => Ok(vector_field(self.name, n)),
                }
            }
            Function::FeatureCross => {
                self.width(scalar(2))?;
                simple(DataType::Int64)
            }
            Function::OneHotIndex => Ok(vector_field(self.name, self.width(scalar(1))?)),
            Function::Tokenize => simple(DataType::new_list(DataType::Utf8, true)),
            Function::Tfidf => {
                let n = self.width(scalar(1))?;
                match args.arg_fields[2].data_type() {
                    DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {}
                    other => {
                        return Err(DataFusionError::Plan(format!(
                            "tfidf: idf must be a list of {n} numbers, got {other}"
                        )))
                    }
                }
                Ok(vector_field(self.name, n))
            }
            Function::Date(_) | Function::IsWeekend => {
                let t = args.arg_fields[0].data_type();
                if !matches!(
                    t,
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) | DataType::Utf8
                ) {
                    return Err(DataFusionError::Plan(format!(
                        "{}({}) needs a date or timestamp, got {t}",
                        self.name,
                        args.arg_fields[0].name()
                    )));
                }
                simple(if self.function == Function::IsWeekend {
                    DataType::Boolean
                } else {
                    DataType::Int64
                })
            }
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let a = &args.args;
        let out: ArrayRef = match self.function {
            Function::HashBucket => {
                let n = scalar_width(&a[1], self.name)?;
                let values = strings(&a[0], rows)?;
                Arc::new(Int64Array::from_iter(
                    values.iter().map(|v| v.as_deref().map(|v| bucket(v, n))),
                ))
            }
            Function::FeatureCross => {
                let n = scalar_width(&a[2], self.name)?;
                let (left, right) = (strings(&a[0], rows)?, strings(&a[1], rows)?);
                Arc::new(Int64Array::from_iter(left.iter().zip(&right).map(
                    |(l, r)| {
                        Some(bucket(
                            &format!("{}\u{1f}{}", l.as_deref()?, r.as_deref()?),
                            n,
                        ))
                    },
                )))
            }
            Function::OneHotIndex => {
                let n = scalar_width(&a[1], self.name)? as usize;
                let index = cast(&a[0].to_array(rows)?, &DataType::Int64)?;
                let index = index.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let rows: Vec<Option<Vec<f64>>> = (0..rows)
                    .map(|r| {
                        let mut v = vec![0.0; n];
                        if index.is_valid(r) {
                            if let Some(slot) =
                                usize::try_from(index.value(r)).ok().filter(|i| *i < n)
                            {
                                v[slot] = 1.0;
                            }
                        }
                        Some(v)
                    })
                    .collect();
                vectors(rows, n)?
            }
            Function::Tokenize | Function::TokenBuckets => {
                let values = strings(&a[0], rows)?;
                if self.function == Function::Tokenize {
                    let mut builder = ListBuilder::new(StringBuilder::new());
                    for v in &values {
                        match v {
                            Some(text) => {
                                for token in tokenize(text) {
                                    builder.values().append_value(token);
                                }
                                builder.append(true);
                            }
                            None => builder.append(false),
                        }
                    }
                    Arc::new(builder.finish())
                } else {
                    let n = scalar_width(&a[1], self.name)?;
                    let mut builder = ListBuilder::new(Int64Builder::new());
                    for v in &values {
                        match v {
                            Some(text) => {
                                for token in tokenize(text) {
                                    builder.values().append_value(bucket(&token, n));
                                }
                                builder.append(true);
                            }
                            None => builder.append(false),
                        }
                    }
                    Arc::new(builder.finish())
                }
            }
            Function::HashedTf | Function::Tfidf => {
                let n = scalar_width(&a[1], self.name)? as usize;
                let idf: Option<Vec<f64>> = if self.function == Function::Tfidf {
                    let list = match &a[2] {
                        ColumnarValue::Scalar(s) => s.to_array()?,
                        ColumnarValue::Array(_) => {
                            return Err(DataFusionError::Plan(
                                "tfidf: idf must be a literal list".into(),
                            ))
                        }
                    };
                    let values = match list.data_type() {
                        DataType::List(_) => list.as_list::<i32>().value(0),
                        DataType::LargeList(_) => list.as_list::<i64>().value(0),
                        _ => list.as_fixed_size_list().value(0),
                    };
                    let values = cast(&values, &DataType::Float64)?;
                    let values: Vec<f64> = values
                        .as_primitive::<Float64Type>()
                        .iter()
                        .map(|v| v.unwrap_or(1.0))
                        .collect();
                    if values.len() != n {
                        return Err(DataFusionError::Plan(format!(
                            "tfidf: idf has {} weights for {n} buckets",
                            values.len()
                        )));
                    }
                    Some(values)
                } else {
                    None
                };
                let rows: Vec<Option<Vec<f64>>> = strings(&a[0], rows)?
                    .iter()
                    .map(|v| {
                        let mut counts = vec![0.0; n];
                        for token in tokenize(v.as_deref().unwrap_or("")) {
                            counts[bucket(&token, n as u64) as usize] += 1.0;
                        }
                        if let Some(idf) = &idf {
                            for (c, w) in counts.iter_mut().zip(idf) {
                                *c *= w;
                            }
                            let norm = counts.iter().map(|c| c * c).sum::<f64>().sqrt();
                            if norm > 0.0 {
                                counts.iter_mut().for_each(|c| *c /= norm);
                            }
                        }
                        Some(counts)
                    })
                    .collect();
                vectors(rows, n)?
            }
            Function::Date(part) => {
                let array = date_array(&a[0], rows)?;
                let parts = date_part(&array, part.arrow())?;
                cast(&parts, &DataType::Int64)?
            }
            Function::IsWeekend => {
                let array = date_array(&a[0], rows)?;
                let days = date_part(&array, DatePart::DayOfWeekMonday0)?;
                let days = days.as_primitive::<Int32Type>();
                Arc::new(BooleanArray::from_iter(
                    days.iter().map(|d| d.map(|d| d >= 5)),
                ))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn date_array(value: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    let array = value.to_array(rows)?;
    Ok(match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => cast(
            &array,
            &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
        )?,
        _ => array,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_stable_and_tokens_are_lower_case_words() {
        // Golden values: buckets must never change between Kiln versions, or
        // stored models would read other buckets.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bucket("DE", 1000), (fnv1a(b"DE") % 1000) as i64);
        let tokens: Vec<String> = tokenize("Hello, World! hello-42").collect();
        assert_eq!(tokens, ["hello", "world", "hello", "42"]);
    }
}

//! TPC-H for Kiln's tests and benchmarks: data generation with the `tpchgen`
//! crate (identical to `dbgen`'s output) written as CSV files, the table
//! schemas as `CREATE EXTERNAL TABLE` statements, and the 22 queries with the
//! specification's validation parameters in a dialect DataFusion accepts.
//!
//! No DataFusion dependency: callers load the CSV into their engine of choice.
//!
//! ```
//! let q6 = kiln_tpch::query(6, 1.0).unwrap();
//! assert!(q6.contains("lineitem"));
//! assert_eq!(kiln_tpch::TABLES.len(), 8);
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use tpchgen::csv::{
    CustomerCsv, LineItemCsv, NationCsv, OrderCsv, PartCsv, PartSuppCsv, RegionCsv, SupplierCsv,
};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};

/// The eight TPC-H tables and their column definitions.
pub const TABLES: [(&str, &str); 8] = [
    ("nation", "n_nationkey BIGINT, n_name VARCHAR, n_regionkey BIGINT, n_comment VARCHAR"),
    ("region", "r_regionkey BIGINT, r_name VARCHAR, r_comment VARCHAR"),
    (
        "part",
        "p_partkey BIGINT, p_name VARCHAR, p_mfgr VARCHAR, p_brand VARCHAR, p_type VARCHAR, \
         p_size INT, p_container VARCHAR, p_retailprice DECIMAL(15,2), p_comment VARCHAR",
    ),
    (
        "supplier",
        "s_suppkey BIGINT, s_name VARCHAR, s_address VARCHAR, s_nationkey BIGINT, s_phone VARCHAR, \
         s_acctbal DECIMAL(15,2), s_comment VARCHAR",
    ),
    (
        "partsupp",
        "ps_partkey BIGINT, ps_suppkey BIGINT, ps_availqty INT, ps_supplycost DECIMAL(15,2), \
         ps_comment VARCHAR",
    ),
    (
        "customer",
        "c_custkey BIGINT, c_name VARCHAR, c_address VARCHAR, c_nationkey BIGINT, c_phone VARCHAR, \
         c_acctbal DECIMAL(15,2), c_mktsegment VARCHAR, c_comment VARCHAR",
    ),
    (
        "orders",
        "o_orderkey BIGINT, o_custkey BIGINT, o_orderstatus VARCHAR, o_totalprice DECIMAL(15,2), \
         o_orderdate DATE, o_orderpriority VARCHAR, o_clerk VARCHAR, o_shippriority INT, \
         o_comment VARCHAR",
    ),
    (
        "lineitem",
        "l_orderkey BIGINT, l_partkey BIGINT, l_suppkey BIGINT, l_linenumber INT, \
         l_quantity DECIMAL(15,2), l_extendedprice DECIMAL(15,2), l_discount DECIMAL(15,2), \
         l_tax DECIMAL(15,2), l_returnflag VARCHAR, l_linestatus VARCHAR, l_shipdate DATE, \
         l_commitdate DATE, l_receiptdate DATE, l_shipinstruct VARCHAR, l_shipmode VARCHAR, \
         l_comment VARCHAR",
    ),
];

const QUERIES: [&str; 22] = [
    include_str!("../queries/q1.sql"),
    include_str!("../queries/q2.sql"),
    include_str!("../queries/q3.sql"),
    include_str!("../queries/q4.sql"),
    include_str!("../queries/q5.sql"),
    include_str!("../queries/q6.sql"),
    include_str!("../queries/q7.sql"),
    include_str!("../queries/q8.sql"),
    include_str!("../queries/q9.sql"),
    include_str!("../queries/q10.sql"),
    include_str!("../queries/q11.sql"),
    include_str!("../queries/q12.sql"),
    include_str!("../queries/q13.sql"),
    include_str!("../queries/q14.sql"),
    include_str!("../queries/q15.sql"),
    include_str!("../queries/q16.sql"),
    include_str!("../queries/q17.sql"),
    include_str!("../queries/q18.sql"),
    include_str!("../queries/q19.sql"),
    include_str!("../queries/q20.sql"),
    include_str!("../queries/q21.sql"),
    include_str!("../queries/q22.sql"),
];

/// Query `n` (1..=22) with the validation parameters; Q11's fraction scales
/// with `scale_factor` as the specification requires.
pub fn query(n: usize, scale_factor: f64) -> Option<String> {
    let text = QUERIES.get(n.checked_sub(1)?)?;
    Some(text.replace(":fraction", &format!("{}", 0.0001 / scale_factor)))
}

/// The `CREATE EXTERNAL TABLE` statement for `table`'s CSV files in `dir/<table>/`.
pub fn csv_table_ddl(table: &str, external_name: &str, dir: &Path) -> Option<String> {
    let (_, columns) = TABLES.iter().find(|(name, _)| *name == table)?;
    Some(format!(
        "CREATE EXTERNAL TABLE {external_name} ({columns}) STORED AS CSV LOCATION '{}/' \
         OPTIONS ('format.has_header' 'true')",
        dir.join(table).display()
    ))
}

/// Writes every table as CSV files with a header under `dir/<table>/part-<i>.csv`,
/// the large tables split in `parts` files. Returns the rows written per table.
pub fn generate_csv(dir: &Path, scale_factor: f64, parts: usize) -> io::Result<Vec<(String, u64)>> {
    let parts = parts.max(1) as i32;
    let mut counts = Vec::new();
    for (table, _) in TABLES {
        let table_dir = dir.join(table);
        fs::create_dir_all(&table_dir)?;
        let mut rows = 0;
        let part_count = if matches!(table, "nation" | "region") {
            1
        } else {
            parts
        };
        for part in 1..=part_count {
            let path = table_dir.join(format!("part-{part}.csv"));
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            rows += write_part(&mut out, table, scale_factor, part, part_count)?;
            out.flush()?;
        }
        counts.push((table.to_string(), rows));
    }
    Ok(counts)
}

fn write_part(
    out: &mut impl Write,
    table: &str,
    sf: f64,
    part: i32,
    parts: i32,
) -> io::Result<u64> {
    let mut rows = 0u64;
    macro_rules! emit {
        ($csv:ident, $iter:expr) => {{
            writeln!(out, "{}", $csv::header())?;
            for row in $iter {
                writeln!(out, "{}", $csv::new(row))?;
                rows += 1;
            }
        }};
    }
    match table {
        "nation" => emit!(NationCsv, NationGenerator::default().iter()),
        "region" => emit!(RegionCsv, RegionGenerator::default().iter()),
        "part" => emit!(PartCsv, PartGenerator::new(sf, part, parts).iter()),
        "supplier" => emit!(SupplierCsv, SupplierGenerator::new(sf, part, parts).iter()),
        "partsupp" => emit!(PartSuppCsv, PartSuppGenerator::new(sf, part, parts).iter()),
        "customer" => emit!(CustomerCsv, CustomerGenerator::new(sf, part, parts).iter()),
        "orders" => emit!(OrderCsv, OrderGenerator::new(sf, part, parts).iter()),
        "lineitem" => emit!(LineItemCsv, LineItemGenerator::new(sf, part, parts).iter()),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown TPC-H table {other}"),
            ))
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_22_queries_exist_and_q11_scales() {
        for n in 1..=22 {
            assert!(query(n, 1.0).unwrap().contains("select"), "q{n}");
        }
        assert!(query(0, 1.0).is_none() && query(23, 1.0).is_none());
        assert!(query(11, 0.01).unwrap().contains("* 0.01"));
    }

    #[test]
    fn generates_the_specified_row_counts() {
        let dir = std::env::temp_dir().join(format!("kiln-tpch-{}", std::process::id()));
        let counts = generate_csv(&dir, 0.01, 2).unwrap();
        let count = |t: &str| counts.iter().find(|(n, _)| n == t).unwrap().1;
        assert_eq!(count("nation"), 25);
        assert_eq!(count("region"), 5);
        assert_eq!(count("supplier"), 100);
        assert_eq!(count("customer"), 1_500);
        assert_eq!(count("orders"), 15_000);
        assert_eq!(count("partsupp"), 8_000);
        assert_eq!(count("lineitem"), 60_175);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! `ledger/src/schema.rs` must say what the migrations made: every table,
//! column, type and nullability, as `diesel print-schema` would write it.

use std::collections::BTreeMap;

use ledger_tests::TestDb;

fn diesel_type(pg: &str) -> &'static str {
    match pg {
        "uuid" => "Uuid",
        "text" => "Text",
        "boolean" => "Bool",
        "numeric" => "Numeric",
        "timestamp with time zone" => "Timestamptz",
        "bytea" => "Bytea",
        "bigint" => "Int8",
        "integer" => "Int4",
        "smallint" => "Int2",
        "double precision" => "Float8",
        "jsonb" => "Jsonb",
        // an array's element type, as `udt_name` names it
        "_text" => "Array<Text>",
        other => panic!("no diesel type for {other}: extend this map"),
    }
}

/// table → column → diesel type, parsed from the `diesel::table!` blocks.
fn declared() -> BTreeMap<String, BTreeMap<String, String>> {
    let source = include_str!("../../ledger/src/schema.rs");
    let mut tables = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in source.lines().map(str::trim) {
        if let Some(name) = line.strip_suffix('{').and_then(|l| l.split_once(" (")).map(|(n, _)| n.trim()) {
            if !name.starts_with("diesel") {
                current = Some(name.to_owned());
                tables.insert(name.to_owned(), BTreeMap::new());
            }
        } else if line == "}" {
            current = None;
        } else if let (Some(table), Some((col, ty))) = (&current, line.split_once(" -> ")) {
            tables.get_mut(table).unwrap().insert(col.to_owned(), ty.trim_end_matches(',').to_owned());
        }
    }
    tables
}

#[actix_web::test]
async fn schema_rs_matches_the_migrated_database() {
    let db = TestDb::new().await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT c.table_name::text, c.column_name::text,
                    CASE WHEN c.data_type = 'ARRAY' THEN c.udt_name::text ELSE c.data_type::text END,
                    c.is_nullable = 'YES'
               FROM information_schema.columns c
               JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_schema = c.table_schema
              WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                AND c.table_name <> '__diesel_schema_migrations'",
            &[],
        )
        .await
        .unwrap();
    let mut actual: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in rows {
        let (table, column, ty, nullable): (String, String, String, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let ty = diesel_type(&ty);
        let ty = if nullable { format!("Nullable<{ty}>") } else { ty.to_owned() };
        actual.entry(table).or_default().insert(column, ty);
    }
    assert_eq!(declared(), actual, "ledger/src/schema.rs has drifted from migrations/");
}

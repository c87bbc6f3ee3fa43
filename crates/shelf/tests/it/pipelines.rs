//! Every pipelines/*.sql parses, and every table, topic, column and function it names
//! exists: tables are declared Fluvio sources or sinks on shelf's topics, functions are
//! Arroyo built-ins or the UDFs of udfs/ called with their number of arguments, and the
//! topics shelf consumes are the ones the pipelines write.

use shelf_cli::deploy::{bundled_pipelines, bundled_udfs, TOPICS};
use sqlparser::ast::{
    visit_expressions, visit_relations, CreateTableOptions, Expr, FunctionArguments, SqlOption,
    Statement, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

/// Arroyo/DataFusion functions the pipelines may use, with their argument counts.
const BUILTINS: [(&str, usize); 9] = [
    ("sum", 1),
    ("count", 1),
    ("hop", 2),
    ("tumble", 1),
    ("session", 1),
    ("string_agg", 2),
    ("concat_ws", 4),
    ("chr", 1),
    ("extract_json_string", 2),
];

struct Table {
    columns: Vec<String>,
    options: BTreeMap<String, String>,
}

fn option_value(value: &Expr) -> String {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// Parameter count of each UDF's `#[udf]` function, read from its file.
fn udf_arities() -> BTreeMap<String, usize> {
    bundled_udfs()
        .into_iter()
        .map(|udf| {
            let after = udf.definition.split("#[udf]").nth(1).unwrap();
            let params = after.split_once('(').unwrap().1.split_once(')').unwrap().0;
            let arity = params.split(',').filter(|p| !p.trim().is_empty()).count();
            (udf.name, arity)
        })
        .collect()
}

#[test]
fn every_pipeline_names_only_what_exists() {
    let udfs = udf_arities();
    let mut udfs_used = BTreeSet::new();
    let mut topics_read = BTreeSet::new();
    let mut topics_written = BTreeSet::new();

    let pipelines = bundled_pipelines();
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| shelf_cli::deploy::pipeline_name(n.trim_end_matches(".sql")))
            .collect();
    let bundled: BTreeSet<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    assert_eq!(on_disk, bundled, "every pipelines/*.sql is deployed");

    for pipeline in &pipelines {
        let name = &pipeline.name;
        let statements = Parser::parse_sql(&GenericDialect {}, &pipeline.sql)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        let mut inserts = 0;
        for statement in &statements {
            match statement {
                Statement::CreateTable(create) => {
                    let mut options = BTreeMap::new();
                    let CreateTableOptions::With(with) = &create.table_options else {
                        panic!("{name}: table {} has no WITH options", create.name);
                    };
                    for option in with {
                        if let SqlOption::KeyValue { key, value } = option {
                            options.insert(key.value.clone(), option_value(value));
                        }
                    }
                    let table = create.name.to_string();
                    assert_eq!(options["connector"], "fluvio", "{name}: {table}");
                    assert_eq!(options["endpoint"], "${FLUVIO_ENDPOINT}", "{name}: {table}");
                    assert_eq!(options["format"], "json", "{name}: {table}");
                    let topic = &options["topic"];
                    assert!(
                        TOPICS.contains(&topic.as_str()),
                        "{name}: unknown topic {topic}"
                    );
                    match options["type"].as_str() {
                        "source" => {
                            assert!(options.contains_key("source.offset"), "{name}: {table}");
                            assert!(!create.columns.is_empty(), "{name}: {table} has no schema");
                            topics_read.insert(topic.clone());
                        }
                        "sink" => {
                            topics_written.insert(topic.clone());
                        }
                        other => panic!("{name}: {table} has type {other}"),
                    }
                    let columns = create
                        .columns
                        .iter()
                        .map(|c| c.name.value.clone())
                        .collect();
                    tables.insert(table, Table { columns, options });
                }
                Statement::Insert(insert) => {
                    inserts += 1;
                    let target = insert.table.to_string();
                    let sink = tables
                        .get(&target)
                        .unwrap_or_else(|| panic!("{name}: INSERT INTO undeclared {target}"));
                    assert_eq!(sink.options["type"], "sink", "{name}: {target}");

                    let mut sources = Vec::new();
                    let _ = visit_relations(statement, |relation| {
                        let relation = relation.to_string();
                        if relation != target {
                            let table = tables
                                .get(&relation)
                                .unwrap_or_else(|| panic!("{name}: reads undeclared {relation}"));
                            assert_eq!(table.options["type"], "source", "{name}: {relation}");
                            sources.push(relation);
                        }
                        ControlFlow::<()>::Continue(())
                    });
                    assert!(!sources.is_empty(), "{name}: reads nothing");

                    // Columns: those of the tables read, `window`, and the query's aliases.
                    let mut known: BTreeSet<String> = sources
                        .iter()
                        .flat_map(|s| tables[s].columns.clone())
                        .collect();
                    known.insert("window".into());
                    for alias in pipeline.sql.split(" AS ").skip(1) {
                        let alias: String = alias
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        known.insert(alias);
                    }
                    let _ = visit_expressions(statement, |expr| {
                        match expr {
                            Expr::Identifier(ident) => assert!(
                                known.contains(&ident.value),
                                "{name}: unknown column {}",
                                ident.value
                            ),
                            Expr::Function(function) => {
                                let called = function.name.to_string().to_lowercase();
                                let args = match &function.args {
                                    FunctionArguments::List(list) => list.args.len(),
                                    _ => 0,
                                };
                                let expected = BUILTINS
                                    .iter()
                                    .find(|(b, _)| *b == called)
                                    .map(|(_, n)| *n)
                                    .or_else(|| udfs.get(&called).copied())
                                    .unwrap_or_else(|| panic!("{name}: unknown function {called}"));
                                assert_eq!(args, expected, "{name}: {called} arguments");
                                if udfs.contains_key(&called) {
                                    udfs_used.insert(called);
                                }
                            }
                            _ => {}
                        }
                        ControlFlow::<()>::Continue(())
                    });
                }
                other => panic!("{name}: unexpected statement {other}"),
            }
        }
        assert_eq!(inserts, 1, "{name}: one INSERT per pipeline");
    }

    let all_udfs: BTreeSet<String> = udfs.keys().cloned().collect();
    assert_eq!(udfs_used, all_udfs, "every UDF is used by a pipeline");
    // shelf consumes these: the pipelines write the derived ones and read the raw ones.
    for topic in ["shelf-item-vectors", "shelf-item-stats"] {
        assert!(topics_written.contains(topic), "no pipeline writes {topic}");
    }
    for topic in ["shelf-items", "shelf-events"] {
        assert!(topics_read.contains(topic), "no pipeline reads {topic}");
    }
}

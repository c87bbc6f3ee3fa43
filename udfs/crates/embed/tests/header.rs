//! Each UDF file's `/* [dependencies] */` header lists exactly what its test crate builds
//! with: Arroyo builds the file from the header alone, so a dependency missing there would
//! pass here and fail in Arroyo.

#[test]
fn every_udf_header_lists_what_its_test_crate_depends_on() {
    let udfs = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for name in ["item_text", "event_weight", "embed", "covisit_pairs"] {
        let source = std::fs::read_to_string(format!("{udfs}/{name}.rs")).unwrap();
        let header = source
            .strip_prefix("/*\n[dependencies]\n")
            .and_then(|rest| rest.split_once("*/"))
            .unwrap_or_else(|| panic!("{name}.rs does not start with a [dependencies] header"))
            .0;
        let header_deps: Vec<&str> = header
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .collect();
        let manifest = std::fs::read_to_string(format!("{udfs}/crates/{name}/Cargo.toml")).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        let crate_deps: Vec<&str> = deps
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, _)| k.trim().trim_end_matches(".workspace"))
            })
            .filter(|k| !k.starts_with('#') && *k != "arroyo-udf-plugin")
            .collect();
        assert_eq!(header_deps, crate_deps, "{name}.rs header vs its crate");
        assert!(source.contains("#[udf]"), "{name}.rs has no #[udf]");
    }
}

//! docker-compose.yml agrees with shelf and with itself: the services the stack needs,
//! images pinned, every volume declared and used, shelf's and the deploy job's commands
//! parsed by shelf's own flag parser, every SHELF_* variable one shelf reads, and the
//! hosts and ports they point at served by the services named.

use clap::{CommandFactory, Parser};
use serde_yaml::Value;
use shelf_cli::deploy::DeployArgs;
use shelf_cli::serve::{ServeArgs, SourceKind};
use std::collections::BTreeSet;

#[derive(Debug, Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

#[derive(Debug, Parser)]
struct Deploy {
    #[command(flatten)]
    args: DeployArgs,
}

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker-compose.yml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn env<'a>(service: &'a Value, name: &str) -> Option<&'a str> {
    service["environment"][name].as_str()
}

/// `HOST:PORT` split.
fn host_port(addr: &str) -> (&str, u16) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    (host.trim_start_matches("http://"), port.parse().unwrap())
}

/// Container ports a service publishes or listens on (from `ports` and its command).
fn published(service: &Value) -> BTreeSet<u16> {
    strings(&service["ports"])
        .iter()
        .map(|p| p.rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn the_stack_has_its_services_with_pinned_images_and_declared_volumes() {
    let doc = compose();
    let services = doc["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "fluvio-sc",
            "fluvio-spu",
            "model-init",
            "arroyo",
            "shelf-deploy",
            "shelf"
        ])
    );
    let shelf_image = format!("shelf:{}", env!("CARGO_PKG_VERSION"));
    let declared: BTreeSet<String> = doc["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut used = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(
            tag != "latest" && tag.chars().next().unwrap().is_ascii_digit(),
            "{name}: {image}"
        );
        if image.starts_with("shelf:") {
            assert_eq!(image, shelf_image, "{name}");
        }
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap().to_string();
            assert!(
                declared.contains(&source),
                "{name}: volume {source} is not declared"
            );
            used.insert(source);
        }
        for dependency in service["depends_on"]
            .as_mapping()
            .map(|m| {
                m.keys()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| strings(&service["depends_on"]))
        {
            assert!(
                names.contains(dependency.as_str()),
                "{name}: depends on {dependency}"
            );
        }
    }
    assert_eq!(used, declared, "every declared volume is used");
    assert!(
        services.values().any(|s| s["build"].as_str() == Some(".")),
        "shelf is built here"
    );
    // The two Fluvio processes run the same release.
    assert_eq!(
        services["fluvio-sc"]["image"],
        services["fluvio-spu"]["image"]
    );
    // State lives in volumes.
    for (name, mount) in [
        ("fluvio-sc", "/fluvio/metadata"),
        ("fluvio-spu", "/fluvio/data"),
        ("arroyo", "/checkpoints"),
        ("shelf", "/data"),
    ] {
        assert!(
            strings(&services[name]["volumes"])
                .iter()
                .any(|v| v.split(':').nth(1) == Some(mount)),
            "{name}: {mount} is not a volume"
        );
    }
}

/// The stack users start is closed by default: shelf is published on the loopback only
/// unless the user opts out, and compose refuses to start without a write key.
#[test]
fn shelf_is_published_on_loopback_and_needs_a_write_key() {
    let doc = compose();
    let shelf = &doc["services"]["shelf"];
    let ports: Vec<&str> = shelf["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(ports, ["${SHELF_BIND:-127.0.0.1}:8080:8080"]);
    let write_key = shelf["environment"]["SHELF_API_KEYS_WRITE"]
        .as_str()
        .unwrap();
    assert!(
        write_key.starts_with("${SHELF_API_KEYS_WRITE:?"),
        "{write_key}"
    );
}

#[test]
fn shelf_and_the_deploy_job_are_configured_with_flags_shelf_has() {
    let doc = compose();
    let services = &doc["services"];

    // Every SHELF_* variable set is read by a flag of `serve` or `deploy` (or the embed UDF).
    let mut known: BTreeSet<String> = [
        "SHELF_LOG",
        "SHELF_UDF_MODEL_DIR",
        "SHELF_API_KEYS_SEARCH",
        "SHELF_API_KEYS_READ",
        "SHELF_API_KEYS_WRITE",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for command in [Serve::command(), Deploy::command()] {
        for arg in command.get_arguments() {
            if let Some(var) = arg.get_env() {
                known.insert(var.to_string_lossy().into_owned());
            }
        }
    }
    for (name, service) in services.as_mapping().unwrap() {
        if let Some(vars) = service["environment"].as_mapping() {
            for var in vars.keys().map(|k| k.as_str().unwrap()) {
                if var.starts_with("SHELF_") {
                    assert!(
                        known.contains(var),
                        "{}: shelf reads no {var}",
                        name.as_str().unwrap()
                    );
                }
            }
        }
    }

    // shelf serve: flags parse, it reads Fluvio at the SC's address.
    let shelf = &services["shelf"];
    let command = strings(&shelf["command"]);
    assert_eq!(command[0], "serve");
    let serve = Serve::try_parse_from(
        std::iter::once("shelf".to_string()).chain(command[1..].iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("shelf's command: {e}"));
    assert_eq!(serve.args.source, SourceKind::Fluvio);
    let listen_port = serve.args.listen.port();
    assert!(
        published(shelf).contains(&listen_port),
        "shelf listens on {listen_port}"
    );
    let (sc_host, sc_port) = host_port(env(shelf, "SHELF_FLUVIO_ENDPOINT").unwrap());
    assert_eq!(sc_host, "fluvio-sc");
    assert!(published(&services["fluvio-sc"]).contains(&sc_port));
    let item_topic = env(shelf, "SHELF_ITEM_TOPIC").unwrap();
    assert!(["shelf-items", "shelf-item-vectors"].contains(&item_topic));
    let health = strings(&shelf["healthcheck"]["test"]).join(" ");
    assert!(
        health.contains(&format!(":{listen_port}/ready")),
        "{health}"
    );

    // shelf deploy: flags parse; Arroyo, the SC and the SPU are where it looks for them.
    let deploy = &services["shelf-deploy"];
    let command = strings(&deploy["command"]);
    assert_eq!(command, ["deploy"]);
    Deploy::try_parse_from(["shelf"]).unwrap();
    let (arroyo_host, arroyo_port) = host_port(env(deploy, "SHELF_ARROYO_URL").unwrap());
    assert_eq!(arroyo_host, "arroyo");
    assert!(published(&services["arroyo"]).contains(&arroyo_port));
    assert_eq!(
        env(deploy, "SHELF_FLUVIO_ENDPOINT"),
        env(shelf, "SHELF_FLUVIO_ENDPOINT")
    );
    let spu_command = strings(&services["fluvio-spu"]["command"]).join(" ");
    let spu_id = env(deploy, "SHELF_SPU_ID").unwrap();
    assert!(
        spu_command.contains(&format!("--id={spu_id}")),
        "{spu_command}"
    );
    for (var, flag) in [
        ("SHELF_SPU_PUBLIC", "--public-server"),
        ("SHELF_SPU_PRIVATE", "--private-server"),
    ] {
        let (host, port) = host_port(env(deploy, var).unwrap());
        assert_eq!(host, "fluvio-spu", "{var}");
        assert!(
            spu_command.contains(&format!("{flag}=0.0.0.0:{port}")),
            "{var}: {spu_command}"
        );
    }
    assert!(
        spu_command.contains("--sc-addr=fluvio-sc:"),
        "{spu_command}"
    );
    // shelf starts after the deploy job made its topics.
    assert_eq!(
        shelf["depends_on"]["shelf-deploy"]["condition"].as_str(),
        Some("service_completed_successfully")
    );

    // Arroyo's workers find the model the embed UDF loads.
    let arroyo = &services["arroyo"];
    let model_dir = env(arroyo, "SHELF_UDF_MODEL_DIR").unwrap();
    let models_mount = strings(&arroyo["volumes"])
        .into_iter()
        .find(|v| v.starts_with("models:"))
        .expect("arroyo mounts the models volume");
    let mount_point = models_mount.split(':').nth(1).unwrap();
    assert!(
        model_dir.starts_with(mount_point),
        "{model_dir} outside {mount_point}"
    );
    let embed = include_str!("../../../../udfs/embed.rs");
    assert!(embed.contains("SHELF_UDF_MODEL_DIR"));
}

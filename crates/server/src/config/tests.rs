//! The server's settings: the example file, the precedence of every setting, and what is
//! refused (the mechanism's own tests are in crates/settings).

use std::ffi::OsString;

use postern_settings::{Inputs, Settings, missing_from_example, testing::check_precedence};

use super::*;

const EXAMPLE: &str = include_str!("../../../../docs/postern.example.toml");

fn from_file(text: &str) -> Result<ServerConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, text).unwrap();
    ServerConfig::load(&Inputs {
        file: Some(path),
        ..Default::default()
    })
}

#[test]
fn the_example_config_parses_and_lists_every_setting() {
    let config = from_file(EXAMPLE).unwrap();
    assert_eq!(config.agent_listen.port(), 2200);
    assert_eq!(
        missing_from_example::<ServerConfig>(EXAMPLE),
        Vec::<&str>::new()
    );
}

/// The file the Debian package installs as /etc/postern/server.toml loads as it is.
#[test]
fn the_packaged_config_loads() {
    let packaged = include_str!("../../../../packaging/postern/server.toml");
    let config = from_file(packaged).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/postern"));
    for line in packaged.lines() {
        if let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
            assert!(
                ServerConfig::SPECS.iter().any(|s| s.key == key),
                "{key} is not a server setting"
            );
        }
    }
}

#[test]
fn every_setting_is_default_then_file_then_variable_then_flag() {
    let fallback = |key: &str| match key {
        "data_dir" => Some(["/srv/a", "/srv/b", "/srv/c"]),
        "database" => Some([
            "postgres://a@db/p",
            "sqlite:///srv/b.db",
            "postgresql://c@db/p",
        ]),
        "log_format" => Some(["json", "text", "json"]),
        "insecure_http" | "https" => Some(["true", "false", "true"]),
        "tls_cert" | "tls_key" | "acme_ca_cert" => Some(["/etc/a.pem", "/etc/b.pem", "/etc/c.pem"]),
        "acme_domain" => Some(["a.example", "b.example", "c.example"]),
        "metrics_listen" => Some(["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]),
        "node_listen" | "node_address" => {
            Some(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"])
        }
        "acme_contact" => Some(["a@example.com", "b@example.com", "c@example.com"]),
        "acme_directory" => Some([
            "https://a.example/d",
            "https://b.example/d",
            "https://c.example/d",
        ]),
        _ => None,
    };
    // Each setting is set alone; the TLS ones that go in pairs get their partner here so
    // that validation judges the value, not the missing partner.
    let valid = |c: &ServerConfig| {
        let mut c = c.clone();
        if c.tls_cert.is_some() || c.tls_key.is_some() {
            c.tls_cert.get_or_insert_with(|| "/etc/cert.pem".into());
            c.tls_key.get_or_insert_with(|| "/etc/key.pem".into());
        }
        if c.acme_contact.is_some() || c.acme_ca_cert.is_some() {
            c.acme_domain
                .get_or_insert_with(|| "postern.example.com".into());
        }
        if c.acme_domain.is_some() {
            c.acme_contact
                .get_or_insert_with(|| "ops@example.com".into());
        }
        // A node's death needs two of its heartbeats.
        c.node_dead_after = c.node_dead_after.max(c.node_heartbeat * 2);
        c.validate().map_err(|e| e.to_string())
    };
    check_precedence::<ServerConfig>(fallback, valid).unwrap();
}

#[test]
fn the_metrics_listener_is_off_unless_set_and_keeps_clear_of_the_tunnel_ports() {
    let file = "data_dir = \"/a\"\nmetrics_listen = \"127.0.0.1:9090\"";
    let from_file = from_file(file).unwrap();
    assert_eq!(from_file.metrics_listen.map(|a| a.port()), Some(9090));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, file).unwrap();
    let flagged = ServerConfig::load(&Inputs {
        file: Some(path),
        flags: vec![("metrics_listen", vec!["127.0.0.1:9091".into()])],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(flagged.metrics_listen.map(|a| a.port()), Some(9091));
    assert_eq!(ServerConfig::new("/a").metrics_listen, None);
    let clash = ServerConfig::load(&Inputs {
        flags: vec![
            ("data_dir", vec!["/a".into()]),
            ("metrics_listen", vec!["127.0.0.1:20001".into()]),
        ],
        ..Default::default()
    });
    assert!(matches!(
        clash,
        Err(ConfigError::TunnelPortsOverlap {
            what: "metrics",
            ..
        })
    ));
}

#[test]
fn flags_beat_the_file_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(
        &path,
        "data_dir = \"/a\"\nhttp = \"127.0.0.1:9000\"\nkeepalive = \"5s\"",
    )
    .unwrap();
    let c = ServerConfig::load(&Inputs {
        file: Some(path),
        flags: vec![("http", vec!["127.0.0.1:9001".into()])],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.http.port(), 9001);
    assert_eq!(c.keepalive, Duration::from_secs(5));
    assert_eq!(c.data_dir, PathBuf::from("/a"));

    let err = from_file("data_dir = \"/a\"\nhtp = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("unknown setting `htp`; did you mean `http`?"),
        "{err}"
    );
    let err = ServerConfig::load(&Inputs::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "data_dir is not set: pass --data-dir, set POSTERN_DATA_DIR or data_dir in the config file"
    );
    let err = ServerConfig::load(&Inputs {
        flags: vec![("data_dir", vec!["/a".into()])],
        env: vec![(OsString::from("POSTERN_HTTP_LISTEN"), OsString::from("x"))],
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("unknown variable POSTERN_HTTP_LISTEN"),
        "{err}"
    );
}

#[test]
fn settings_that_make_no_sense_are_refused_whichever_layer_they_come_from() {
    let zero = |key: &str| format!("data_dir = \"/a\"\n{key} = \"0s\"");
    for (key, _, _) in DURATION_LIMITS {
        let err = from_file(&zero(key)).unwrap_err().to_string();
        assert!(err.starts_with(&describe::<ServerConfig>(key)), "{err}");
        assert!(err.ends_with("got 0s"), "{err}");
    }
    for key in [
        "heartbeat_misses",
        "max_handshakes",
        "max_handshakes_per_source",
        "max_pending_agents",
        "enrollments_per_source",
    ] {
        let err = from_file(&format!("data_dir = \"/a\"\n{key} = 0"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{key} (--")), "{err}");
        assert!(err.ends_with("got 0"), "{err}");
    }
    let err = ServerConfig::load(&Inputs {
        flags: vec![
            ("data_dir", vec!["/a".into()]),
            ("http", vec!["127.0.0.1:20005".into()]),
        ],
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("HTTP port 20005"), "{err}");
    let err = from_file("data_dir = \"/a\"\nnode_heartbeat = \"10s\"\nnode_dead_after = \"15s\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "node_dead_after (--node-dead-after, POSTERN_NODE_DEAD_AFTER) must be at least twice"
        ),
        "{err}"
    );
    let err = from_file("data_dir = \"\"").unwrap_err().to_string();
    assert_eq!(err, "data_dir (--data-dir, POSTERN_DATA_DIR) is empty");
    let err = from_file("data_dir = \"/a\"\nlog_format = \"xml\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `xml`"), "{err}");
    assert!(
        err.starts_with("log_format (--log-format, POSTERN_LOG_FORMAT) from the config file"),
        "{err}"
    );
}

#[test]
fn a_database_url_that_names_no_store_is_refused_with_its_setting() {
    let err = from_file("data_dir = \"/srv/p\"\ndatabase = \"mysql://db/p\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("database (--database, POSTERN_DATABASE): unsupported database URL"),
        "{err}"
    );
    let config = from_file("data_dir = \"/srv/p\"\ndatabase = \"sqlite:///srv/p.db\"\n").unwrap();
    assert_eq!(
        config.store_database().unwrap(),
        crate::store::Database::Sqlite("/srv/p.db".into())
    );
}

//! The mechanism on a small definition with a secret (a database URL with a password).

use std::path::PathBuf;
use std::time::Duration;

use super::*;

crate::settings! {
    /// A definition like a program's.
    pub struct Demo (prefix "POSTERN_DEMO_", config "POSTERN_DEMO_CONFIG") {
        /// Where data lives.
        pub data_dir: PathBuf,
        /// A count.
        pub count: u32 = 3,
        /// An interval.
        #[serde(with = "humantime_serde")]
        pub every: Duration = Duration::from_secs(15),
        /// Names, a list.
        #[setting(env = "POSTERN_NAMES")]
        pub names: Vec<String> = Vec::new(),
        /// The database, with its password.
        #[setting(secret)]
        pub database: String = "sqlite://local".to_owned(),
        /// Not set unless given.
        pub name: Option<String> = None,
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

fn with_data_dir() -> Inputs {
    Inputs {
        flags: vec![("data_dir", vec!["/d".into()])],
        ..Default::default()
    }
}

#[test]
fn the_definition_gives_keys_flags_variables_and_help() {
    let keys: Vec<_> = Demo::SPECS.iter().map(|s| s.key).collect();
    assert_eq!(
        keys,
        ["data_dir", "count", "every", "names", "database", "name"]
    );
    assert!(Demo::SPECS[0].required && !Demo::SPECS[1].required);
    assert_eq!(Demo::SPECS[2].help.trim(), "An interval.");
    assert_eq!(
        describe::<Demo>("data_dir"),
        "data_dir (--data-dir, POSTERN_DEMO_DATA_DIR)"
    );
    assert_eq!(Demo::SPECS[3].variable(Demo::ENV_PREFIX), "POSTERN_NAMES");
    assert!(is_secret::<Demo>("database") && !is_secret::<Demo>("count"));
}

#[test]
fn secrets_are_masked_when_printed_and_in_debug() {
    let mut inputs = with_data_dir();
    inputs.env = env(&[("POSTERN_DEMO_DATABASE", "postgres://u:hunter2@db/postern")]);
    // Only POSTERN_* variables are read by prefix check: name the variable explicitly.
    let mut demo: Demo = load(&inputs).unwrap();
    demo.database = "postgres://u:hunter2@db/postern".into();
    let printed = to_toml(&demo).unwrap();
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("database = \"<secret>\""), "{printed}");
    assert!(printed.contains("count = 3\n"), "{printed}");
    assert!(printed.contains("every = \"15s\"\n"), "{printed}");
    assert!(printed.contains("# name is not set\n"), "{printed}");
    let debug = format!("{demo:?}");
    assert!(
        !debug.contains("hunter2") && debug.contains("<secret>"),
        "{debug}"
    );
    // The printed configuration reads back as the same settings (but the masked secret).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &printed).unwrap();
    let back: Demo = load(&Inputs {
        file: Some(path),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(back.database, MASK);
    assert_eq!(
        Demo {
            database: MASK.into(),
            ..demo
        },
        back
    );
}

#[test]
fn each_layer_beats_the_one_below_for_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    // Three values per setting, one per layer, distinct from the default and each other.
    let values = |key: &str| -> [(&str, toml::Value); 3] {
        match key {
            "data_dir" => ["/f", "/e", "/g"].map(|s| (s, toml::Value::String(s.into()))),
            "count" => [("4", 4), ("5", 5), ("6", 6)].map(|(s, n)| (s, toml::Value::Integer(n))),
            "every" => ["1s", "2s", "3s"].map(|s| (s, toml::Value::String(s.into()))),
            "names" => ["a", "b", "c"].map(|s| (s, toml::Value::Array(vec![s.into()]))),
            "database" | "name" => ["x", "y", "z"].map(|s| (s, toml::Value::String(s.into()))),
            other => panic!("no test values for {other}"),
        }
    };
    for spec in Demo::SPECS {
        let [f, e, g] = values(spec.key);
        let variable = spec.variable(Demo::ENV_PREFIX);
        let mut table = toml::Table::new();
        table.insert("data_dir".into(), "/base".into());
        table.insert(spec.key.into(), f.1.clone());
        std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
        let get = |inputs: &Inputs| {
            let demo: Demo = load(inputs).unwrap();
            toml::Table::try_from(&demo).unwrap()[spec.key].clone()
        };
        let mut inputs = Inputs {
            known_variables: vec![variable.clone()],
            ..Default::default()
        };
        inputs.flags = vec![("data_dir", vec!["/base".into()])];
        if !spec.required {
            let default = toml::Table::try_from(Demo::default())
                .unwrap()
                .get(spec.key)
                .cloned();
            assert_eq!(
                load::<Demo>(&inputs)
                    .map(|d| toml::Table::try_from(&d).unwrap().get(spec.key).cloned())
                    .unwrap(),
                default,
                "{}",
                spec.key
            );
        }
        inputs.flags.clear();
        inputs.file = Some(file.clone());
        assert_eq!(get(&inputs), f.1, "file: {}", spec.key);
        inputs.env = env(&[(variable.as_str(), e.0)]);
        inputs.known_variables.clear();
        assert_eq!(get(&inputs), e.1, "variable: {}", spec.key);
        inputs.flags = vec![(spec.key, vec![g.0.to_owned()])];
        assert_eq!(get(&inputs), g.1, "flag: {}", spec.key);
    }
}

#[test]
fn unknown_keys_and_variables_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, "data_dir = \"/d\"\ncuont = 3\n").unwrap();
    let err = load::<Demo>(&Inputs {
        file: Some(file.clone()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "config file {}: unknown setting `cuont`; did you mean `count`?",
            file.display()
        )
    );

    let mut inputs = with_data_dir();
    inputs.env = env(&[("POSTERN_NAMEZ", "a")]);
    let err = load::<Demo>(&inputs).unwrap_err().to_string();
    assert!(err.starts_with("unknown variable POSTERN_NAMEZ:"), "{err}");
    assert!(err.ends_with("did you mean `POSTERN_NAMES`?"), "{err}");
    // Read elsewhere in the program, or by the build and tests: not refused.
    inputs.env = env(&[
        ("POSTERN_NAMEZ", "a"),
        ("POSTERN_LOG", "debug"),
        ("OTHER", "x"),
    ]);
    inputs.known_variables = vec!["POSTERN_NAMEZ".into()];
    assert!(load::<Demo>(&inputs).is_ok());
}

/// One environment serves every Postern program: a variable of another program (the
/// server's POSTERN_DATA_DIR, to this `POSTERN_DEMO_` program) passes, a near miss of one is
/// refused with the name it was likely meant to be.
#[test]
fn another_programs_variables_pass_and_their_typos_are_named() {
    let mut inputs = with_data_dir();
    inputs.env = env(&[
        ("POSTERN_DATA_DIR", "/srv/postern"),
        ("POSTERN_URL", "https://x"),
    ]);
    assert!(load::<Demo>(&inputs).is_ok());
    inputs.env = env(&[("POSTERN_DATA_DIRR", "/srv/postern")]);
    let err = load::<Demo>(&inputs).unwrap_err().to_string();
    assert!(
        err.starts_with("unknown variable POSTERN_DATA_DIRR:"),
        "{err}"
    );
    assert!(err.ends_with("did you mean `POSTERN_DATA_DIR`?"), "{err}");
    // The program's own name wins a tie with another program's.
    inputs.env = env(&[("POSTERN_DEMO_COUNTS", "3")]);
    let err = load::<Demo>(&inputs).unwrap_err().to_string();
    assert!(err.ends_with("did you mean `POSTERN_DEMO_COUNT`?"), "{err}");
    inputs.env = env(&[("POSTERN_NOTHING_LIKE_IT", "1")]);
    let err = load::<Demo>(&inputs).unwrap_err().to_string();
    assert!(!err.contains("did you mean"), "{err}");
}

#[test]
fn a_bad_value_names_the_setting_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, "data_dir = \"/d\"\ncount = \"many\"\n").unwrap();
    let err = load::<Demo>(&Inputs {
        file: Some(file.clone()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "count (--count, POSTERN_DEMO_COUNT) from the config file {}: invalid type",
            file.display()
        )),
        "{err}"
    );
    let mut inputs = with_data_dir();
    inputs.env = env(&[("POSTERN_DEMO_COUNT", "-1")]);
    let err = load::<Demo>(&inputs).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "count (--count, POSTERN_DEMO_COUNT) from the variable POSTERN_DEMO_COUNT:"
        ),
        "{err}"
    );
    inputs.env.clear();
    inputs.flags.push(("every", vec!["soon".into()]));
    let err = load::<Demo>(&inputs).unwrap_err().to_string();
    assert!(
        err.starts_with("every (--every, POSTERN_DEMO_EVERY) from the flag --every:"),
        "{err}"
    );

    let err = load::<Demo>(&Inputs::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        "data_dir is not set: pass --data-dir, set POSTERN_DEMO_DATA_DIR or data_dir in the config file"
    );
}

#[test]
fn text_is_read_as_toml_then_as_a_string_then_as_a_list() {
    let mut inputs = with_data_dir();
    inputs.flags.push(("count", vec!["7".into()]));
    inputs.flags.push(("names", vec!["ann, bo".into()]));
    inputs.flags.push(("name", vec!["true".into()]));
    inputs.env = env(&[("POSTERN_NAMES", "ignored-by-the-flag")]);
    let demo: Demo = load(&inputs).unwrap();
    assert_eq!(demo.count, 7);
    assert_eq!(demo.names, ["ann", "bo"]);
    assert_eq!(demo.name.as_deref(), Some("true"));
    inputs.flags.retain(|(k, _)| *k != "names");
    inputs
        .flags
        .push(("names", vec!["ann".into(), "cy".into()]));
    let demo: Demo = load(&inputs).unwrap();
    assert_eq!(demo.names, ["ann", "cy"]);
}

#[test]
fn an_example_must_mention_every_setting() {
    let text = "data_dir = \"/d\"\ncount = 3\n# every = \"1s\"\nnames = []\n# database = \"x\"\n";
    assert_eq!(missing_from_example::<Demo>(text), ["name"]);
}

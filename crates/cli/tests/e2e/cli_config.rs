//! Configuration and arguments as real `postern` processes meet them: settings that make no
//! sense refused from the flag, the variable and the file alike; each error's cause printed
//! once; a huge argument cut; a mistyped data dir refused; one server per data dir.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{DEADLINE, postern, read_until, run_cli, tunnel_ports};

/// Where a setting is given.
#[derive(Clone, Copy, Debug)]
enum Layer {
    Flag,
    Variable,
    File,
}

/// Runs `postern server` with `key = value` given in `layer` (plus a data dir, and ports that
/// cannot be taken) and returns its exit code and stderr.
async fn server_with(dir: &Path, key: &str, value: &str, layer: Layer) -> (i32, String) {
    let config = dir.join("postern.toml");
    let mut file = format!("data_dir = \"{}\"\n", dir.join("data").display());
    let mut cmd = postern();
    cmd.args([
        "server",
        "--http",
        "127.0.0.1:0",
        "--agent-listen",
        "127.0.0.1:0",
    ]);
    match layer {
        Layer::Flag => {
            cmd.arg(format!("--{}", key.replace('_', "-"))).arg(value);
        }
        Layer::Variable => {
            cmd.env(format!("POSTERN_{}", key.to_uppercase()), value);
        }
        Layer::File => file.push_str(&format!("{key} = \"{value}\"\n")),
    }
    std::fs::write(&config, file).unwrap();
    cmd.arg("--config").arg(&config);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("postern server neither refused nor ran")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn settings_that_make_no_sense_are_refused_from_flag_variable_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let every = [Layer::Flag, Layer::Variable, Layer::File];
    let cases: [(&str, &str, &[Layer], &str); 7] = [
        (
            "session_timeout",
            "0s",
            &every,
            "error: session_timeout (--session-timeout, POSTERN_SESSION_TIMEOUT) must be between 1s and 1h; got 0s",
        ),
        (
            "idle_timeout",
            "0s",
            &every,
            "error: idle_timeout (--idle-timeout, POSTERN_IDLE_TIMEOUT) must be between 1s and 30days; got 0s",
        ),
        (
            "login_ttl",
            "0s",
            &every,
            "error: login_ttl (--login-ttl, POSTERN_LOGIN_TTL) must be between 1m and 30days; got 0s",
        ),
        (
            "log_format",
            "xml",
            &every,
            "unknown variant `xml`, expected `text` or `json`",
        ),
        (
            "http_idle_timeout",
            "2days",
            &every,
            "error: http_idle_timeout (--http-idle-timeout, POSTERN_HTTP_IDLE_TIMEOUT) must be between 1s and 1day; got 2days",
        ),
        (
            "tunnel_ports",
            "8000-8100",
            &every,
            "error: tunnel_ports (--tunnel-ports, POSTERN_TUNNEL_PORTS) 8000-8100 include the HTTP port 8080; pick ports apart",
        ),
        (
            "keepalive",
            "0s",
            &every,
            "error: keepalive (--keepalive, POSTERN_KEEPALIVE) must be between 1s and 10m; got 0s",
        ),
    ];
    for (key, value, layers, message) in cases {
        for layer in layers.iter().copied() {
            // The overlap needs the HTTP port in the range: give it where the range is not.
            let (code, err) = if key == "tunnel_ports" {
                let data = dir.path().join("data");
                let mut cmd = postern();
                cmd.args(["server", "--data-dir"]).arg(&data);
                cmd.args(["--http", "127.0.0.1:8080", "--agent-listen", "127.0.0.1:0"]);
                match layer {
                    Layer::Flag => drop(cmd.args(["--tunnel-ports", value])),
                    Layer::Variable => drop(cmd.env("POSTERN_TUNNEL_PORTS", value)),
                    Layer::File => {
                        let config = dir.path().join("ports.toml");
                        std::fs::write(&config, format!("tunnel_ports = \"{value}\"\n")).unwrap();
                        cmd.arg("--config").arg(config);
                    }
                }
                let out = tokio::time::timeout(DEADLINE, cmd.output())
                    .await
                    .unwrap()
                    .unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            } else {
                server_with(dir.path(), key, value, layer).await
            };
            assert_eq!(code, 1, "{key} = {value} in {layer:?} was accepted: {err}");
            assert!(err.contains(message), "{key} in {layer:?}: {err}");
            assert!(
                !dir.path().join("data").exists(),
                "a refused configuration touched the data dir"
            );
        }
    }
}

#[tokio::test]
async fn each_cause_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let (ok, _, err) = run_cli(
        dir.path(),
        &["server", "--config", missing.to_str().unwrap()],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: cannot read config file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "data_dir = \"/tmp/x\"\nkeepalive = [1, 2\n").unwrap();
    let (ok, _, err) = run_cli(
        dir.path(),
        &["server", "--config", bad.to_str().unwrap()],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(err.matches("keepalive = [1, 2").count(), 1, "{err}");
    assert_eq!(err.matches("TOML parse error").count(), 1, "{err}");

    // A data dir that is a file: the server's own error, its cause once.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let (ok, _, err) = run_cli(
        dir.path(),
        &[
            "server",
            "--data-dir",
            file.join("sub").to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(
        err.matches("Not a directory (os error 20)").count(),
        1,
        "{err}"
    );
}

#[tokio::test]
async fn a_huge_argument_is_cut_in_the_error_that_echoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(100_000);
    for args in [
        vec!["server", "--heartbeat-misses", huge.as_str()],
        vec![
            "login",
            "--server",
            huge.as_str(),
            "--user",
            "u",
            "--password-stdin",
        ],
    ] {
        let (ok, _, err) = run_cli(dir.path(), &args, Some("a-password\n")).await;
        assert!(!ok);
        assert!(err.len() < 1_000, "{} bytes of error", err.len());
        assert!(err.contains("bytes in all"), "{err}");
    }
}

#[tokio::test]
async fn a_huge_argument_sent_to_the_server_is_a_clear_error() {
    let server = crate::harness::TestServer::start().await;
    let home = crate::harness::cli_home(&server, "admin", &server.admin_password).await;
    let huge = "x".repeat(100_000);
    for args in [["agents", "approve", &huge], ["sessions", "stop", &huge]] {
        let (ok, _, err) = run_cli(home.path(), &args, None).await;
        assert!(!ok);
        assert!(err.len() < 1_000, "{} bytes of error", err.len());
        assert!(
            err.starts_with("error: this request cannot be sent (is an argument far too long?)"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn add_user_refuses_a_data_dir_without_a_store_unless_told_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo/path");
    let typo_arg = typo.to_str().unwrap();
    let add = [
        "admin",
        "add-user",
        "--data-dir",
        typo_arg,
        "ann",
        "--role",
        "viewer",
    ];
    let (ok, out, err) = run_cli(dir.path(), &add, Some("ann-password-1\n")).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("no Postern store in {typo_arg}")),
        "{err}"
    );
    assert!(!typo.exists(), "the refused add-user created the directory");

    let mut create = add.to_vec();
    create.push("--create");
    let (ok, out, err) = run_cli(dir.path(), &create, Some("ann-password-1\n")).await;
    assert!(ok, "{err}");
    assert!(out.contains("added user ann (viewer)"), "{out}");
    assert!(typo.join("postern.db").is_file());
    // Now there is a store: no --create needed.
    let again = [
        "admin",
        "add-user",
        "--data-dir",
        typo_arg,
        "bo",
        "--role",
        "viewer",
    ];
    let (ok, _, err) = run_cli(dir.path(), &again, Some("bo-password-12\n")).await;
    assert!(ok, "{err}");
}

#[tokio::test]
async fn a_second_server_on_one_data_dir_refuses_to_start_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = tunnel_ports().to_string();
    let server = || {
        let mut cmd = postern();
        cmd.args(["server", "--data-dir"]).arg(&data).args([
            "--http",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--tunnel-ports",
            &ports,
        ]);
        cmd
    };
    let mut first = server().spawn().unwrap();
    let mut stdout = BufReader::new(first.stdout.take().unwrap()).lines();
    let out = read_until(&mut stdout, "agent gateway").await.join("\n");
    let api = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("HTTP API:"))
        .unwrap()
        .trim()
        .to_owned();

    let second = tokio::time::timeout(DEADLINE, server().output())
        .await
        .expect("the second server started")
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "data directory {} is in use by another postern server (pid {})",
            data.display(),
            first.id().unwrap()
        )),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("HTTP API"),
        "the second server came up"
    );
    let health = reqwest::get(format!("{api}/health")).await.unwrap();
    assert_eq!(health.status(), 200, "the first server serves on");

    // Adding a user while the server runs still works.
    let add = [
        "admin",
        "add-user",
        "--data-dir",
        data.to_str().unwrap(),
        "cy",
        "--role",
        "viewer",
    ];
    let (ok, _, err) = run_cli(dir.path(), &add, Some("cy-password-12\n")).await;
    assert!(ok, "{err}");

    // However the first one ends, its lock ends with it.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let mut third = server().spawn().unwrap();
    let mut stdout = BufReader::new(third.stdout.take().unwrap()).lines();
    read_until(&mut stdout, "agent gateway").await;
    third.start_kill().unwrap();
    third.wait().await.unwrap();
}

/// Runs `postern ARGS` to completion with `env`, returning (exit code, stdout, stderr).
async fn postern_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = postern();
    cmd.args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("postern did not finish")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn print_config_shows_flag_over_variable_over_file_with_the_token_masked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        "data_dir = \"/srv/postern\"\nlogin_ttl = \"1h\"\nmax_handshakes = 10\nkeepalive = \"20s\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, out, err) = postern_with(
        &[
            "server",
            "--config",
            config,
            "--max-handshakes",
            "12",
            "--print-config",
        ],
        &[
            ("POSTERN_MAX_HANDSHAKES", "11"),
            ("POSTERN_KEEPALIVE", "25s"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    for line in [
        "data_dir = \"/srv/postern\"",
        "login_ttl = \"1h\"",
        "keepalive = \"25s\"",
        "max_handshakes = 12",
        "http = \"127.0.0.1:8080\"",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} not in:\n{out}");
    }
    assert!(!std::path::Path::new("/srv/postern").exists());

    let agent = dir.path().join("agent.toml");
    std::fs::write(
        &agent,
        "server = \"gw.example:2200\"\ndata_dir = \"/srv/agent\"\n",
    )
    .unwrap();
    let (code, out, err) = postern_with(
        &[
            "agent",
            "--config",
            agent.to_str().unwrap(),
            "--print-config",
        ],
        &[
            ("POSTERN_TOKEN", "pet_s3cret"),
            ("POSTERN_SYNC_RATE", "30s"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("server = \"gw.example:2200\"\n"), "{out}");
    assert!(out.contains("sync_rate = \"30s\"\n"), "{out}");
    assert!(out.contains("token = \"<secret>\"\n"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
}

#[tokio::test]
async fn unknown_keys_and_variables_and_bad_values_are_refused_by_name_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let server = ["server", "--data-dir", data, "--http", "127.0.0.1:0"];
    let (code, _, err) = postern_with(&server, &[("POSTERN_IDLE_TIMOUT", "5m")]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: unknown variable POSTERN_IDLE_TIMOUT:")
            && err
                .trim_end()
                .ends_with("did you mean `POSTERN_IDLE_TIMEOUT`?"),
        "{err}"
    );
    let (code, _, err) = postern_with(&server, &[("POSTERN_HEARTBEAT_MISSES", "many")]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: heartbeat_misses (--heartbeat-misses, POSTERN_HEARTBEAT_MISSES) from the variable POSTERN_HEARTBEAT_MISSES: invalid type"
        ),
        "{err}"
    );
    let agent_file = dir.path().join("agent.toml");
    std::fs::write(
        &agent_file,
        "server = \"gw:2200\"\ndata_dir = \"/x\"\nsync = \"1s\"\n",
    )
    .unwrap();
    let (code, _, err) =
        postern_with(&["agent", "--config", agent_file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains(": unknown setting `sync`"), "{err}");
    // A variable of another command (the agent's, the CLI's) is not the server's business.
    let (code, out, err) = postern_with(
        &["server", "--data-dir", data, "--print-config"],
        &[("POSTERN_SERVER", "gw:2200"), ("POSTERN_URL", "http://x")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("data_dir"), "{out}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start touched the data dir"
    );
}

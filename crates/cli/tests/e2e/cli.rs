//! The `postern` binary as a person uses it: login, agents, tokens, events, admin, server
//! configuration, JSON logs and the quickstart.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use postern_protocol::AgentStatus;
use postern_protocol::api::Role;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{TestAgent, TestServer, approved, free_port, postern, read_until, run_cli};

#[tokio::test]
async fn login_use_and_logout_from_the_command_line() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let url = server.url();

    let (ok, _, err) = run_cli(home, &["agents"], None).await;
    assert!(!ok);
    assert_eq!(err.trim(), "error: not logged in; run postern login");

    let (ok, _, err) = run_cli(
        home,
        &[
            "login",
            "--server",
            &url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some("wrong\n"),
    )
    .await;
    assert!(!ok);
    assert_eq!(err.trim(), "error: wrong user name or password");

    let password = format!("{}\n", server.admin_password);
    let (ok, out, err) = run_cli(
        home,
        &[
            "login",
            "--server",
            &url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&password),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("logged in"), "{out}");
    let creds = home.join("credentials.json");
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A pending agent, approved from the CLI by a prefix of its name.
    let agent = TestAgent::start(&server, "cli-target", None);
    agent
        .wait_state("pending", |s| s.status == Some(AgentStatus::Pending))
        .await;
    let (ok, out, _) = run_cli(home, &["agents"], None).await;
    assert!(ok);
    assert!(
        out.contains("cli-target") && out.contains("pending") && out.contains("online"),
        "{out}"
    );
    let (ok, out, err) = run_cli(home, &["agents", "approve", "cli-t"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("cli-target is now approved"), "{out}");
    agent.wait_state("approved", approved).await;
    let (ok, out, _) = run_cli(home, &["agents", "--json"], None).await;
    assert!(ok);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["status"], "approved");
    assert_eq!(listed[0]["online"], true);

    // Tokens: create, list, revoke.
    let (ok, out, err) = run_cli(
        home,
        &["tokens", "create", "--ttl", "10m", "--uses", "2", "--json"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(created["token"].as_str().unwrap().starts_with("pet_"));
    let id = created["id"].as_str().unwrap();
    let (ok, out, _) = run_cli(home, &["tokens", "list"], None).await;
    assert!(ok && out.contains(id) && out.contains("0/2"), "{out}");
    let (ok, out, _) = run_cli(home, &["tokens", "revoke", id], None).await;
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, out, _) = run_cli(home, &["tokens", "list", "--json"], None).await;
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["revoked"],
        true
    );

    // Events, as text and as JSON lines.
    let (ok, out, _) = run_cli(home, &["events", "--limit", "100"], None).await;
    assert!(
        ok && out.contains("agent.approved") && out.contains("cli-target"),
        "{out}"
    );
    let (ok, out, _) = run_cli(home, &["events", "--json"], None).await;
    assert!(ok);
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }

    // A viewer cannot approve; the refusal is one clear line.
    let viewer_home = tempfile::tempdir().unwrap();
    server.add_user("view", Role::Viewer).await;
    run_cli(
        viewer_home.path(),
        &[
            "login",
            "--server",
            &url,
            "--user",
            "view",
            "--password-stdin",
        ],
        Some("view-password-123\n"),
    )
    .await;
    let (ok, _, err) = run_cli(
        viewer_home.path(),
        &["agents", "revoke", "cli-target"],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: this needs the admin role; you are viewer"
    );

    let (ok, out, _) = run_cli(home, &["logout"], None).await;
    assert!(ok && out.contains("logged out"), "{out}");
    assert!(!creds.exists());
    let (ok, _, err) = run_cli(home, &["agents"], None).await;
    assert!(!ok && err.contains("run postern login"), "{err}");
}

#[tokio::test]
async fn expired_logins_and_unreachable_servers_are_one_clear_line() {
    let mut server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let password = format!("{}\n", server.admin_password);
    let (ok, _, _) = run_cli(
        home,
        &[
            "login",
            "--server",
            &server.url(),
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&password),
    )
    .await;
    assert!(ok);

    // Age the stored login past its expiry.
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("credentials.json")).unwrap())
            .unwrap();
    let store = server.store().await;
    let hash = postern_server::auth::secret::hash_secret(creds["token"].as_str().unwrap());
    let (user, _) = store.login(&hash).await.unwrap().unwrap();
    store.delete_login(&hash).await.unwrap();
    store.insert_login(&hash, &user.id, 0, 1).await.unwrap();
    let (ok, _, err) = run_cli(home, &["agents"], None).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: your login has expired; run postern login"
    );

    let url = server.url();
    server.stop().await;
    let (ok, _, err) = run_cli(home, &["agents"], None).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!("error: cannot reach the server at {url}: is it running?")
    );
    assert_eq!(err.trim().lines().count(), 1);
}

#[tokio::test]
async fn admin_add_user_works_on_the_store_while_the_server_runs() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    let (ok, out, err) = run_cli(
        home.path(),
        &[
            "admin",
            "add-user",
            "--data-dir",
            &data_dir,
            "olga",
            "--role",
            "operator",
        ],
        Some("olga-secret-pw\n"),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("added user olga (operator)"));
    let token = server.login("olga", "olga-secret-pw").await;
    let (_, me) = server
        .call(reqwest::Method::GET, "/api/v1/me", Some(&token), None)
        .await;
    assert_eq!(me["role"], "operator");

    let (ok, _, err) = run_cli(
        home.path(),
        &[
            "admin",
            "add-user",
            "--data-dir",
            &data_dir,
            "olga",
            "--role",
            "viewer",
        ],
        Some("another-pw-1\n"),
    )
    .await;
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    let (ok, _, err) = run_cli(
        home.path(),
        &[
            "admin",
            "add-user",
            "--data-dir",
            &data_dir,
            "x",
            "--role",
            "root",
        ],
        Some("another-pw-1\n"),
    )
    .await;
    assert!(!ok);
    assert!(err.contains("unknown role"), "{err}");
}

#[tokio::test]
async fn the_server_reads_its_config_file_and_environment_and_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let (http_from_file, http_from_env, agents_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nhttp = \"127.0.0.1:{http_from_file}\"\nagent_listen = \"127.0.0.1:{agents_port}\"\nlog_format = \"json\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = postern()
        .args(["server", "--config"])
        .arg(&config)
        .env("POSTERN_HTTP", format!("127.0.0.1:{http_from_env}"))
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let out = read_until(&mut stdout, "agent gateway").await;
    let text = out.join("\n");
    assert!(
        text.contains("password:"),
        "first start prints the admin password: {text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{http_from_env}")),
        "the environment wins over the file: {text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{agents_port}")), "{text}");
    let logs = read_until(&mut stderr, "postern server started").await;
    for line in &logs {
        let parsed: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        assert!(parsed["level"].is_string());
    }
    let health = reqwest::get(format!("http://127.0.0.1:{http_from_env}/api/v1/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Only the hash of the generated password is stored.
    let password = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .unwrap()
        .trim()
        .to_owned();
    let db = std::fs::read(dir.path().join("data/postern.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(&password));

    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // An unknown key in the file is a clear error (`https` is a real one now: HTTPS).
    std::fs::write(&config, "data_dir = \"/tmp/x\"\nhttp_s = \"oops\"\n").unwrap();
    let (ok, _, err) = run_cli(
        dir.path(),
        &["server", "--config", config.to_str().unwrap()],
        None,
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("unknown setting `http_s`; did you mean `https`?"),
        "{err}"
    );
}

#[tokio::test]
async fn quickstart_runs_everything_stops_cleanly_on_ctrl_c_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("qs");
    let mut first_password = String::new();
    let mut first_did = String::new();
    for run in 0..2 {
        let mut child = postern()
            .arg("quickstart")
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        let out = read_until(&mut stdout, "Ctrl-C stops everything").await;
        let field = |name: &str| {
            out.iter()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| panic!("no {name} in {out:#?}"))
        };
        let url = field("URL:");
        let password = field("password:");
        let agent_line = field("agent:");
        assert!(agent_line.contains("approved, online"), "{agent_line}");
        let did = agent_line.split(['(', ')']).nth(1).unwrap().to_owned();
        if run == 0 {
            first_password = password.clone();
            first_did = did.clone();
        } else {
            assert_eq!(
                password, first_password,
                "the second run shows the same credentials"
            );
            assert_eq!(did, first_did, "the second run reuses the agent");
        }

        // The printed credentials work and the agent is there, approved and online.
        let client = reqwest::Client::new();
        let login: serde_json::Value = client
            .post(format!("{url}/api/v1/login"))
            .json(&serde_json::json!({"user": "admin", "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().unwrap();
        let agents: Vec<serde_json::Value> = client
            .get(format!("{url}/api/v1/agents"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(agents.len(), 1, "{agents:?}");
        assert_eq!(agents[0]["status"], "approved");
        assert_eq!(agents[0]["online"], true);
        assert_eq!(agents[0]["did"], did.as_str());
        assert_eq!(agents[0]["name"], postern_agent::facts::hostname());

        // Ctrl-C: a clean stop with exit status 0.
        let pid = child.id().unwrap().to_string();
        let killed = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "quickstart exited with {status}");
    }
}

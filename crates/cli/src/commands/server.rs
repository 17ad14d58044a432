//! `postern server`

use anyhow::{Context, Result};
use postern_server::config::LogFormat;
use postern_server::{Reload, Server, ServerConfig, ServerConfigFile};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::args::ServerArgs;

pub fn config(args: &ServerArgs) -> Result<(ServerConfig, Option<LogFormat>)> {
    let file = match &args.config {
        Some(path) => ServerConfigFile::load(path)?,
        None => ServerConfigFile::default(),
    };
    let log_format = file.log_format;
    let overrides = ServerConfigFile {
        data_dir: args.data_dir.clone(),
        http: args.http,
        agent_listen: args.agent_listen,
        keepalive: args.keepalive,
        heartbeat_interval: args.heartbeat_interval,
        heartbeat_misses: args.heartbeat_misses,
        heartbeat_timeout: args.heartbeat_timeout,
        tunnel_ports: args.tunnel_ports,
        tunnel_bind: args.tunnel_bind,
        session_timeout: args.session_timeout,
        idle_timeout: args.idle_timeout,
        handshake_timeout: args.handshake_timeout,
        max_handshakes: args.max_handshakes,
        max_handshakes_per_source: args.max_handshakes_per_source,
        max_pending_agents: args.max_pending_agents,
        enrollments_per_source: args.enrollments_per_source,
        enrollment_window: args.enrollment_window,
        // TLS
        insecure_http: args.insecure_http.then_some(true),
        https: args.https.then_some(true),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        acme_domain: args.acme_domain.clone(),
        acme_contact: args.acme_contact.clone(),
        acme_directory: args.acme_directory.clone(),
        acme_ca_cert: args.acme_ca_cert.clone(),
        // Metrics
        metrics_listen: args.metrics_listen,
        ..Default::default()
    };
    Ok((ServerConfig::resolve(file, overrides)?, log_format))
}

pub async fn run(config: ServerConfig) -> Result<()> {
    // Listening before the start is announced: from then on SIGHUP means reload, never the
    // default (ending the process).
    let hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let server = Server::start(config)
        .await
        .context("the server could not start")?;
    if let Some(password) = &server.initial_admin_password {
        println!("Created the first administrator. This password is shown only once:");
        println!("  user:     admin");
        println!("  password: {password}");
        println!();
    }
    println!("Postern server");
    println!("  HTTP API:      {}/api/v1", server.url());
    println!("  agent gateway: {}", server.agent_addr);
    println!("  host key:      {}", server.host_key_fingerprint);
    if let Some(fingerprint) = &server.tls_fingerprint {
        println!("  certificate:   {fingerprint}");
        println!(
            "                 (postern login --server {} --fingerprint {fingerprint}, for a self-signed one)",
            server.url()
        );
    }
    if let Some(addr) = server.metrics_addr {
        println!("  metrics:       http://{addr}/metrics");
    }
    serve_until_stopped(&server, hangups).await;
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}

/// Until Ctrl-C or SIGTERM: each SIGHUP reloads what can be reloaded, and says so once.
async fn serve_until_stopped(server: &Server, mut hangups: Signal) {
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = hangups.recv() => match server.reload() {
                Reload::CertificateFiles => {
                    tracing::info!("SIGHUP: reading the certificate files again");
                }
                Reload::Nothing => tracing::info!(
                    "SIGHUP: nothing to reload (no certificate files are configured); still serving"
                ),
            },
        }
    }
}

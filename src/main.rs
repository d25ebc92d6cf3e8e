//! `webrtc_server`: parses flags, sets up logging, runs the server until a signal.

use std::process::ExitCode;

use clap::Parser;
use remotemedia_webrtc::cluster::{
    local_api_address, request_drain, AttachToken, Controller, Worker, WorkerTlsClient,
};
use remotemedia_webrtc::config::{Command, Config, Mode, TokenCommand};
use remotemedia_webrtc::server::Server;
use remotemedia_webrtc::signaling::{issue_token, sign_token, token_expiry, Claims};
use remotemedia_webrtc::telemetry::Telemetry;
use remotemedia_webrtc::websocket_mode::WebSocketPeer;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") {
        return print_token(TokenCommand::parse_from(std::env::args().skip(1)));
    }
    let config = Config::from_args();
    let telemetry = match Telemetry::install(config.mode.name(), config.log_format) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("webrtc_server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("webrtc_server: {err:#}");
            ExitCode::FAILURE
        }
    };
    // Every role's graceful stop ends here: the spans still queued leave now.
    if !telemetry.shutdown().await {
        // The exporter is stuck on a thread the runtime would wait for: leave without it.
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
    }
    code
}

async fn run(config: Config) -> anyhow::Result<()> {
    if let Some(Command::Drain { worker_api }) = &config.command {
        let api = worker_api
            .clone()
            .unwrap_or_else(|| local_api_address(&config));
        // The worker API may require --worker-token; the preStop hook has the pod's env.
        let token = config.cluster.worker_token()?;
        let token = AttachToken::new(token.as_ref()).map_err(anyhow::Error::msg)?;
        let tls = WorkerTlsClient::from_config(&config)?;
        let active = request_drain(&api, token, tls.as_ref()).await?;
        println!("worker at {api} drains; {active} sessions active");
        return Ok(());
    }
    if let Some(Command::Probe {
        server,
        seconds,
        ice_ip,
        manifest,
    }) = &config.command
    {
        let peer_id = format!("probe-{}", uuid::Uuid::new_v4().simple());
        // A server that authenticates: the probe signs its own short-lived token with the
        // same secret (`--auth-secret`, from the release's Secret in the test Pod).
        let token = match config.auth.secret()? {
            Some(secret) => Some(issue_token(
                secret.expose(),
                &peer_id,
                std::time::Duration::from_secs(300),
                None,
                None,
            )?),
            None => None,
        };
        let options = remotemedia_webrtc::client::ProbeOptions {
            server: server.clone(),
            seconds: *seconds,
            ice_ip: *ice_ip,
            manifest: manifest.clone(),
            peer_id,
            token,
        };
        let report = remotemedia_webrtc::client::probe(&options).await?;
        println!(
            "probe: {server} echoed {:.1} Hz at {:.1} dBFS ({:.2} s back; answer {:.0} ms, connected {:.0} ms): ok",
            report.frequency,
            report.level_dbfs,
            report.received_seconds,
            report.setup.answer.as_secs_f64() * 1000.0,
            report.setup.connected.as_secs_f64() * 1000.0,
        );
        return Ok(());
    }
    if config.mode == Mode::Worker {
        let worker = Worker::bind(&config).await?;
        tracing::info!(
            worker_id = worker.id(),
            api = ?worker.grpc_address(),
            advertised = worker.advertised_address(),
            http = ?worker.http_address(),
            udp = ?worker.udp_address(),
            capacity = config.cluster.capacity,
            "webrtc_server listening (mode worker)"
        );
        // The drain may take up to --drain-timeout; the watchdog allows for it.
        let grace = config.cluster.drain_timeout + config.limits.shutdown_timeout;
        worker.run(shutdown_on_signals(grace)).await?;
        tracing::info!("stopped");
        return Ok(());
    }
    if config.mode == Mode::Controller {
        let controller = Controller::bind(&config).await?;
        tracing::info!(
            controller_id = controller.id(),
            http = ?controller.http_address(),
            "webrtc_server running (mode controller)"
        );
        controller
            .run(shutdown_on_signals(config.limits.shutdown_timeout))
            .await?;
        tracing::info!("stopped");
        return Ok(());
    }
    if config.mode == Mode::Websocket {
        let peer = WebSocketPeer::bind(&config).await?;
        tracing::info!(
            signaling = ?config.signaling_url,
            peer_id = peer.peer_id(),
            http = ?peer.http_address(),
            "webrtc_server joining signaling (mode websocket)"
        );
        let stop = shutdown_on_signals(config.limits.shutdown_timeout);
        peer.run(stop).await?;
        tracing::info!("stopped");
        return Ok(());
    }
    let server = Server::bind(&config).await?;
    tracing::info!(
        grpc = ?server.grpc_address(),
        http = ?server.http_address(),
        udp = ?server.udp_address(),
        manifest = ?config.manifest,
        mode = ?config.mode,
        "webrtc_server listening"
    );
    server
        .run(shutdown_on_signals(config.limits.shutdown_timeout))
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// `webrtc_server token --peer-id ID --ttl SECONDS --auth-secret S`: the token alone on the
/// last line of stdout.
fn print_token(command: TokenCommand) -> ExitCode {
    let secret = match command.auth.secret() {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            eprintln!("webrtc_server token: --auth-secret or --auth-secret-file is required");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("webrtc_server token: {err}");
            return ExitCode::FAILURE;
        }
    };
    let claims = Claims {
        sub: command.peer_id,
        exp: token_expiry(std::time::Duration::from_secs(command.ttl)),
        room: command.room,
        manifest: command.manifest,
        room_manifest: command.room_manifest,
    };
    match sign_token(secret.expose(), &claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("webrtc_server token: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes at the first SIGINT/SIGTERM; a second signal or the watchdog exits at once.
fn shutdown_on_signals(grace: std::time::Duration) -> impl std::future::Future<Output = ()> {
    let (first_signal_tx, first_signal) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = first_signal_tx.send(());
        // A second signal, or the watchdog, ends the process at once.
        tokio::select! {
            () = wait_for_signal() => tracing::warn!("second signal: exiting now"),
            () = tokio::time::sleep(grace) => tracing::warn!(?grace, "graceful shutdown took too long: exiting now"),
        }
        std::process::exit(0);
    });
    async move {
        let _ = first_signal.await;
    }
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

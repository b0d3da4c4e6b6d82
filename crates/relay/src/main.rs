//! `chinwag-relay`: parse the flags, bind, say where, serve until SIGINT or SIGTERM; or, with
//! `token`, print a join token.

use std::io::Write as _;

use anyhow::Context as _;
use chinwag_relay::Relay;
use chinwag_relay::config::{Args, Command, read_token_key};
use chinwag_relay::token::{Grant, parse_ttl};
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "chinwag_relay=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse().with_config_file()?;
    if let Some(Command::Token { room, name, ttl, token_secret_file }) = &args.command {
        let secret_file = token_secret_file.as_ref().or(args.token_secret_file.as_ref()).context(
            "name the token secret with --token-secret-file FILE (the same file the relay is given)",
        )?;
        let key = read_token_key(secret_file)?;
        chinwag_proto::validate_room(room, chinwag_proto::MAX_ROOM_CHARS).context("invalid --room")?;
        if let Some(name) = name {
            chinwag_proto::validate_name(name, chinwag_proto::MAX_NAME_CHARS).context("invalid --name")?;
        }
        let ttl = parse_ttl(ttl)
            .with_context(|| format!("--ttl must look like 90s, 30m, 1h or 7d, not \"{ttl}\""))?;
        let grant = Grant::new(room, name.as_deref(), std::time::SystemTime::now(), ttl);
        println!("{}", key.mint(&grant));
        return Ok(());
    }
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("relay")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let relay = Relay::bind(config).await?;
        // Scripts and tests read this exact line to find the port.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "chinwag-relay listening on {}", relay.url())?;
        stdout.flush()?;
        drop(stdout);
        relay.run(shutdown_signal()).await;
        anyhow::Ok(())
    })
}

/// Completes on the first SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the relay");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

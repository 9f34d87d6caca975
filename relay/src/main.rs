//! The `relay` binary: `relay serve` (the default) and `relay audit verify`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mimalloc::MiMalloc;

use relay::config::{AuditAction, Cli, Command, Config};
use relay::control::{ControlServer, Geoip, State};
use relay::io::{DataPlane, DataPlaneConfig};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => args.resolve().and_then(serve),
        None => cli.serve.resolve().and_then(serve),
        Some(Command::Audit {
            action: AuditAction::Verify { data_dir },
        }) => {
            let code = relay::store::run_verify_cli(&data_dir);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config.log);
    // Open the store and restore the rules before any packet can be forwarded.
    let store = relay::store::Store::open(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("opening the database in {}: {e}", config.data_dir.display())
    })?;
    let geoip = config.geoip.as_deref().map(Geoip::open).transpose()?;
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, term.clone())?;
        signal_hook::flag::register(signal, term.clone())?;
    }

    let plane = DataPlane::start(&DataPlaneConfig {
        media: config.media,
        workers: config.workers,
        backend: config.backend,
        pin: config.pin,
        socket_buffer: config.socket_buffer,
        recv_batch: config.recv_batch,
        send_batch: config.send_batch,
        ring_buffers: config.ring_buffers,
        gso: config.gso,
        busy_poll: config.busy_poll,
        ..DataPlaneConfig::default()
    })
    .with_context(|| format!("starting the data plane on {}", config.media))?;
    let plane = Arc::new(plane);
    let media = plane.local_addr();
    let backend = plane.backend().name();
    let workers = plane.workers();
    let state = State::new(plane.clone(), config.limits, store, geoip, config.advertise)?;
    let control = ControlServer::start(config.control, state, config.control_token.clone())?;
    println!(
        "relay ready media={media} control={} backend={backend} workers={workers}",
        control.local_addr()
    );
    tracing::info!(backend, workers, "relay started");

    while !term.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("shutting down");
    control.stop();
    drop(plane);
    Ok(())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

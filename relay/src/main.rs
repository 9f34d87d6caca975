//! The `relay` binary: `relay serve` (the default) and `relay audit verify`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mimalloc::MiMalloc;

use relay::config::{AuditAction, Cli, Command, Config, LogFormat};
use relay::control::{Control, ControlConfig, FleetSetup};
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
    init_logging(&config.log, config.log_format);
    // Open the store first: rules, rooms and participants are restored into the workers before
    // the API answers.
    let store = relay::store::Store::open(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("opening the database in {}: {e}", config.data_dir.display())
    })?;
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, term.clone())?;
        signal_hook::flag::register(signal, term.clone())?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;

    // Fleet mode: the workers hold the fleet's status from their start, so they forward nothing
    // until the relay has joined and applied every rule up to its join.
    let fence = config
        .fleet
        .as_ref()
        .map(|_| Arc::new(relay::fleet::Status::new()));
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
        handoff_min_members: config.handoff_min_members,
        largest_room: config.limits.max_participants,
        fence: fence.clone(),
        trunk: config.fleet.as_ref().map(|f| f.trunk),
        idle_spin: config.idle_poll,
        worker_priority: config.worker_priority,
    })
    .with_context(|| format!("starting the data plane on {}", config.media))?;
    let plane = Arc::new(plane);
    let media = plane.local_addr();
    let backend = plane.backend().name();
    let workers = plane.workers();
    let control = Control::start(
        ControlConfig {
            control: config.control,
            ops: config.ops,
            tokens: config.control_tokens.clone(),
            limits: config.limits,
            geoip: config.geoip.clone(),
            advertise: config.advertise,
            webhook: config.webhook.clone(),
            fleet: config
                .fleet
                .clone()
                .map(|mut f| {
                    // Registered as bound (port 0 picks one).
                    if f.trunk.port() == 0
                        && let Some(bound) = plane.trunk_addr()
                    {
                        f.trunk.set_port(bound.port());
                    }
                    f
                })
                .zip(fence)
                .map(|(settings, status)| FleetSetup { settings, status }),
            data_dir: config.data_dir.clone(),
        },
        store,
        plane.clone(),
    )?;
    let ops = control
        .ops_addr()
        .map(|a| format!(" ops={a}"))
        .unwrap_or_default();
    println!(
        "relay ready media={media} control={}{ops} backend={backend} workers={workers}",
        control.local_addr()
    );
    tracing::info!(backend, workers, "relay started");

    while !term.load(Ordering::SeqCst) {
        if hup.swap(false, Ordering::SeqCst) {
            // Tokens and the GeoIP database are read again; forwarding is not touched.
            match config.token_sources.read() {
                Ok(tokens) => {
                    tracing::info!(tokens = tokens.len(), "reloading control tokens and GeoIP");
                    control.reload(Some(tokens));
                }
                Err(e) => {
                    tracing::error!(error = %e, "reloading control tokens failed; keeping the old ones");
                    control.reload(None);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("shutting down");
    control.stop();
    drop(plane);
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields sit beside timestamp, level, target and message, so that a log
        // pipeline (journald, Loki, Elasticsearch) indexes them without unnesting; the relay
        // has no spans to list.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .init(),
    }
}

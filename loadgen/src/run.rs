//! One run: set up the target, drive the clients, make the scheduled changes, tear down, and
//! account for every packet.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::api::{Api, Ice, Joined};
use crate::client::{self, ClientSpec, Interval, Outcome, Progress, Shared, StreamSpec, Work};
use crate::model::{Rule, Subscribe, Switch, Window, World};
use crate::netns::{self, Netns};
use crate::profile::Kind;
use crate::report::{Burst, Control, JoinLatency, Latency, Report};
use crate::rtpengine::Rtpengine;
use crate::scenario::{Addressing, Event, Plan, Scenario, Target};
use crate::webrtc::Srtp;
use crate::{stats, stun};

/// How a run shows itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Draw a live progress bar on stderr.
    pub progress: bool,
    /// Write an HDR histogram interval log of latency (µs, one histogram per second) here.
    pub histogram_log: Option<PathBuf>,
}

/// Runs a scenario with no progress bar and no histogram log.
pub fn run(scenario: &Scenario) -> Result<Report> {
    run_with(scenario, &Options::default())
}

/// Runs a scenario. Fails only when the setup fails; errors during the run are in the report.
pub fn run_with(scenario: &Scenario, options: &Options) -> Result<Report> {
    scenario.validate()?;
    let plan = scenario.plan();
    let start = Instant::now();
    // One socket per participant, and a clone of each for STUN.
    crate::io::raise_fd_limit(2 * plan.participants.len() as u64 + FD_SPARE);
    let nets: Vec<Arc<Netns>> = scenario
        .netns
        .iter()
        .map(|name| Netns::open(name).map(Arc::new))
        .collect::<Result<_>>()?;
    let sockets = if scenario.fleet() {
        bind_fleet(scenario, &plan, &nets)?
    } else {
        bind(IpAddr::from([127, 0, 0, 1]), plan.participants.len())?
    };
    for (socket, part) in sockets.iter().zip(&plan.participants) {
        if !part.read {
            // Nobody reads it: a small buffer, so that a thousand of them hold little memory.
            let _ = socket2::SockRef::from(socket).set_recv_buffer_size(SINK_BUFFER);
        }
    }
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    let mut world = World {
        grace_ns: scenario.grace_ms * 1_000_000,
        unread: plan.participants.iter().map(|p| !p.read).collect(),
        relay: plan.participants.iter().map(|p| p.relay).collect(),
        room: plan.participants.iter().map(|p| p.room).collect(),
        subscribe: plan
            .participants
            .iter()
            .map(|p| p.subscribe.clone())
            .collect(),
        presence: vec![Switch::default(); plan.participants.len()],
        streams: plan
            .streams
            .iter()
            .map(|s| (s.participant, s.profile.kind))
            .collect(),
        rules: plan
            .rules
            .iter()
            .map(|r| Rule {
                targets: r.targets.clone(),
                direction: r.direction,
                media: r.media,
                active: Switch::default(),
            })
            .collect(),
    };
    let mut ctl = Controller::new(scenario, &plan, &addrs, start);
    ctl.netns = nets;
    // Clones of the sockets let the controller send STUN requests for participants that join
    // once the client threads own the sockets.
    if scenario.target == Target::Relay
        && (scenario.addressing == Addressing::Stun || scenario.webrtc)
    {
        ctl.stun_sockets = sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<Result<_, _>>()
            .context("cloning client sockets for STUN (raise the open-file limit)")?;
    }
    let dests = ctl.setup(&mut world)?;

    // Threads get the participants loadgen reads round-robin, each with its streams; the
    // sockets of the others stay open, unread, until the end.
    let read = plan.participants.iter().filter(|p| p.read).count();
    let threads = scenario.threads.min(read).max(1);
    let mut works: Vec<Work> = (0..threads).map(|_| Work::default()).collect();
    let mut slot = vec![(0usize, 0usize); plan.participants.len()];
    let mut unread = Vec::new();
    for (p, socket) in sockets.into_iter().enumerate() {
        if !plan.participants[p].read {
            unread.push(socket);
            continue;
        }
        let t = works.iter().map(|w| w.clients.len()).sum::<usize>() % threads;
        let w = &mut works[t];
        slot[p] = (t, w.clients.len());
        w.clients.push(ClientSpec {
            participant: p as u32,
            socket,
            srtp: ctl.srtp[p].take(),
        });
    }
    for (id, (s, dests)) in plan.streams.iter().zip(dests).enumerate() {
        let (t, client) = slot[s.participant as usize];
        works[t].streams.push(StreamSpec {
            id: id as u32,
            client,
            profile: s.profile,
            ssrc: s.ssrc,
            dests,
        });
    }
    let send_from_ns = ctl.now() + 20_000_000;
    let duration_ns = (scenario.duration * 1e9) as u64;
    let shared = Shared {
        start,
        active: plan
            .participants
            .iter()
            .map(|p| AtomicBool::new(p.join_ns == 0))
            .collect(),
        latched: plan
            .participants
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect(),
        kinds: plan.streams.iter().map(|s| s.profile.kind).collect(),
        send_from_ns,
        send_until_ns: AtomicU64::new(send_from_ns + duration_ns),
        drain_ns: scenario.drain_ms * 1_000_000,
        spin: scenario.spin,
        max_packets: scenario.max_packets / threads as u64,
        seed: scenario.seed,
        progress: (0..threads).map(|_| Progress::default()).collect(),
    };
    let (tx, rx) = mpsc::channel::<Interval>();
    let log = options.histogram_log.is_some();
    let bar = progress_bar(options.progress, duration_ns);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = works
            .into_iter()
            .enumerate()
            .map(|(t, work)| {
                let tx = log.then(|| tx.clone());
                let shared = &shared;
                scope.spawn(move || client::drive(work, shared, t, tx))
            })
            .collect();
        let mut next = 0;
        let mut rates = Rates::default();
        while !handles.iter().all(|h| h.is_finished()) {
            let now = ctl.now();
            while let Some(&(at, event)) = plan.events.get(next) {
                if send_from_ns + at > now {
                    break;
                }
                next += 1;
                if at < duration_ns {
                    ctl.apply(event, &mut world, &shared);
                }
            }
            ctl.keep_consent();
            rates.update(&bar, &shared, now);
            let wake = plan
                .events
                .get(next)
                .map_or(u64::MAX, |(at, _)| send_from_ns + at);
            let nap = wake.saturating_sub(ctl.now()).min(50_000_000);
            std::thread::sleep(Duration::from_nanos(nap.max(200_000)));
        }
        bar.finish_and_clear();
        handles
            .into_iter()
            .map(|h| h.join().expect("client threads do not panic"))
            .collect()
    });
    drop(tx);
    ctl.teardown();
    drop(unread);

    let mut report = Report {
        target: format!("{:?}", scenario.target).to_lowercase(),
        duration_s: duration_ns as f64 / 1e9,
        rooms: plan.rooms.len() as u64,
        participants: plan.participants.len() as u64,
        relays: scenario.relays(),
        streams: plan.streams.len() as u64,
        send_window: Some((
            start + Duration::from_nanos(send_from_ns),
            start + Duration::from_nanos(send_from_ns + duration_ns),
        )),
        ..Report::default()
    };
    account(&plan, &world, outcomes, &mut report);
    ctl.control.join_ms = JoinLatency::of(&mut ctl.join_us);
    report.control = ctl.control;
    report.errors.extend(ctl.errors);
    if let Some(path) = &options.histogram_log {
        write_histogram_log(
            path,
            rx,
            SystemTime::now() - start.elapsed() + Duration::from_nanos(send_from_ns),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn account(plan: &Plan, world: &World, outcomes: Vec<Outcome>, report: &mut Report) {
    let mut send_us = vec![Vec::new(); plan.streams.len()];
    let mut received = vec![crate::stats::StreamMap::default(); plan.participants.len()];
    let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut latency = [hist(), hist(), hist()];
    let (mut delivery, mut socket_wait) = (hist(), hist());
    let mut foreign = 0;
    for o in outcomes {
        for (id, log) in o.send_us {
            send_us[id as usize] = log;
        }
        for (p, seen) in o.received {
            received[p as usize] = seen;
        }
        for (all, h) in latency.iter_mut().zip(&o.latency) {
            let _ = all.add(h);
        }
        let _ = delivery.add(&o.delivery);
        let _ = socket_wait.add(&o.socket_wait);
        report.datagrams_out += o.datagrams_out;
        report.send_errors += o.send_errors;
        report.late_frames += o.late_frames;
        report.other += o.other;
        report.srtp_errors += o.srtp_errors;
        foreign += o.foreign;
        if let Some(e) = o.error {
            report.errors.push(e);
        }
    }
    let tallies = stats::account(world, &send_us, &received);
    report.fill(&tallies, &latency);
    report.delivery_us = Latency::of(&delivery);
    report.socket_wait_us = Latency::of(&socket_wait);
    // Copies naming no stream of ours are misdelivered too.
    report.received += foreign;
    report.misdelivered += foreign;
}

/// Sets up and changes the target: the relay's API, rtpengine's ng protocol, or nothing.
struct Controller<'a> {
    scenario: &'a Scenario,
    plan: &'a Plan,
    addrs: &'a [SocketAddr],
    start: Instant,
    /// One API client per relay (one unless multi-relay), in the order of the control
    /// addresses; rooms and rules go through the first.
    apis: Vec<Api>,
    /// The namespaces of the relays (multi-relay mode with `--netns`), in the same order.
    netns: Vec<Arc<Netns>>,
    rtpengine: Option<Rtpengine>,
    /// The media address each relay gives (the first participant's on it).
    media: Vec<Option<SocketAddr>>,
    rule_ids: Vec<Option<String>>,
    rooms_made: Vec<usize>,
    stun_sockets: Vec<UdpSocket>,
    /// Relay address, credentials and our ufrag of each latched participant, for consent
    /// checks.
    consent: Vec<Option<(SocketAddr, Ice, String)>>,
    /// The SRTP state of each WebRTC participant, for its client thread.
    srtp: Vec<Option<Srtp>>,
    consent_next: usize,
    consent_ns: u64,
    control: Control,
    errors: Vec<String>,
    /// One API client per connection that a webinar's burst uses at once.
    burst_apis: Vec<Api>,
    /// Duration of every webinar join, µs.
    join_us: Vec<u64>,
}

impl<'a> Controller<'a> {
    fn new(
        scenario: &'a Scenario,
        plan: &'a Plan,
        addrs: &'a [SocketAddr],
        start: Instant,
    ) -> Self {
        Self {
            scenario,
            plan,
            addrs,
            start,
            apis: Vec::new(),
            netns: Vec::new(),
            rtpengine: None,
            media: Vec::new(),
            rule_ids: vec![None; plan.rules.len()],
            rooms_made: Vec::new(),
            stun_sockets: Vec::new(),
            consent: vec![None; plan.participants.len()],
            srtp: plan.participants.iter().map(|_| None).collect(),
            consent_next: 0,
            consent_ns: 0,
            control: Control::default(),
            errors: Vec::new(),
            burst_apis: Vec::new(),
            join_us: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Creates rooms and the participants present from the start; returns each stream's
    /// destinations.
    fn setup(&mut self, world: &mut World) -> Result<Vec<Vec<SocketAddr>>> {
        match self.scenario.target {
            Target::Direct => Ok(self.setup_direct(world)),
            Target::Relay => {
                let result = self.setup_relay(world);
                if result.is_err() {
                    self.teardown();
                }
                result
            }
            Target::Rtpengine => {
                let t0 = self.now();
                let mut ng = Rtpengine::connect(&self.scenario.control)?;
                let result = ng.setup(self.plan, self.addrs);
                let t1 = self.now();
                self.control.calls += ng.calls;
                self.control.slowest_call_ms = ng.slowest_ms;
                self.rtpengine = Some(ng);
                let dests = match result {
                    Ok(d) => d,
                    Err(e) => {
                        self.teardown();
                        return Err(e);
                    }
                };
                for p in &mut world.presence {
                    p.set(
                        Window {
                            start_ns: t0,
                            end_ns: t1,
                        },
                        true,
                    );
                }
                Ok(dests)
            }
        }
    }

    fn setup_direct(&mut self, world: &mut World) -> Vec<Vec<SocketAddr>> {
        for p in &mut world.presence {
            p.set(
                Window {
                    start_ns: 0,
                    end_ns: 0,
                },
                true,
            );
        }
        self.plan
            .streams
            .iter()
            .map(|s| {
                let room =
                    &self.plan.rooms[self.plan.participants[s.participant as usize].room as usize];
                room.members
                    .iter()
                    .filter(|&&r| r != s.participant)
                    .filter(|&&r| match &self.plan.participants[r as usize].subscribe {
                        Subscribe::All => true,
                        Subscribe::List(l) => l.binary_search(&s.participant).is_ok(),
                    })
                    .map(|&r| self.addrs[r as usize])
                    .collect()
            })
            .collect()
    }

    fn setup_relay(&mut self, world: &mut World) -> Result<Vec<Vec<SocketAddr>>> {
        for (i, control) in self.scenario.controls().into_iter().enumerate() {
            let mut api = Api::new(control, self.scenario.token.as_deref());
            let mut from = String::new();
            if let Some(ns) = self.netns.get(i) {
                api = api.in_netns(ns.clone());
                from = format!(" from network namespace {}", ns.name());
            }
            api.info().with_context(|| {
                format!("cannot reach the relay's control API at {control}{from}")
            })?;
            self.apis.push(api);
        }
        for (i, room) in self.plan.rooms.iter().enumerate() {
            self.timed(|api| api.put_room(&room.name))
                .with_context(|| format!("creating room {}", room.name))?;
            self.rooms_made.push(i);
        }
        if self.scenario.webrtc {
            return self.setup_webrtc(world);
        }
        let mut media = vec![None; self.plan.participants.len()];
        let mut joined = Vec::new();
        for (p, part) in self.plan.participants.iter().enumerate() {
            if part.join_ns > 0 {
                continue;
            }
            let (window, j) = self.join(p)?;
            world.presence[p].set(window, true);
            media[p] = Some(j.media_address);
            joined.push((p, j));
        }
        if self.scenario.addressing == Addressing::Stun {
            self.latch_setup(world, &joined)?;
        }
        if self.apis.len() > 1 {
            let all: Vec<usize> = joined.iter().map(|(p, _)| *p).collect();
            self.await_fleet(&all)?;
            // Until every relay knows a participant, packets between relays may go either way.
            let end_ns = self.now();
            for p in all {
                let start_ns = world.presence[p].first_start().unwrap_or(0);
                world.presence[p] = Switch::default();
                world.presence[p].set(Window { start_ns, end_ns }, true);
            }
        }
        if let Some(w) = &self.scenario.webinar {
            // Open the bursts' connections one after the other, before the bursts: opened all
            // at once, some of them wait for seconds behind the others' (kept-alive) connections
            // in the relay's HTTP server.
            for _ in 0..w.connections {
                let api = Api::new(&self.scenario.control, self.scenario.token.as_deref());
                api.info()
                    .context("opening a connection for the join bursts")?;
                self.burst_apis.push(api);
            }
        }
        self.media = vec![None; self.apis.len()];
        for (p, m) in media.iter().enumerate() {
            let relay = self.plan.participants[p].relay as usize;
            if self.media[relay].is_none() {
                self.media[relay] = *m;
            }
        }
        let Some(first) = media.iter().flatten().next().copied() else {
            bail!("no participant joined at the start")
        };
        Ok(self
            .plan
            .streams
            .iter()
            .map(|s| {
                let relay = self.plan.participants[s.participant as usize].relay as usize;
                vec![
                    media[s.participant as usize]
                        .or(self.media[relay])
                        .unwrap_or(first),
                ]
            })
            .collect())
    }

    /// Waits until every relay lists each of participants `ps` in its room (multi-relay mode):
    /// a relay forwards to another relay's participants once it knows them.
    fn await_fleet(&mut self, ps: &[usize]) -> Result<()> {
        let mut rooms: Vec<(u32, Vec<&str>)> = Vec::new();
        for &p in ps {
            let part = &self.plan.participants[p];
            match rooms.iter_mut().find(|(r, _)| *r == part.room) {
                Some((_, names)) => names.push(&part.name),
                None => rooms.push((part.room, vec![&part.name])),
            }
        }
        let deadline = Instant::now() + FLEET_TIMEOUT;
        for relay in 0..self.apis.len() {
            for (room, names) in &rooms {
                let room = &self.plan.rooms[*room as usize].name;
                loop {
                    let reply = self.timed_on(relay, |api| api.room(room))?;
                    let missing = missing(&reply, names);
                    if missing.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "relay {} does not list {} of the participants of room {room} \
                             (such as {}) within {FLEET_TIMEOUT:?}",
                            self.scenario.controls()[relay],
                            missing.len(),
                            missing[0]
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        Ok(())
    }

    /// Every participant as a WebRTC leg (`crate::webrtc`): the publishers first (a subscribe
    /// offer needs their tracks, and the room's codecs come from the first publish offer), then
    /// the receivers. Returns each stream's destination.
    fn setup_webrtc(&mut self, world: &mut World) -> Result<Vec<Vec<SocketAddr>>> {
        let apis = std::mem::take(&mut self.apis);
        let api = apis.first().context("no API client")?;
        let plan = self.plan;
        let publishers =
            (0..plan.participants.len()).filter(|&p| !plan.participants[p].streams.is_empty());
        let receivers =
            (0..plan.participants.len()).filter(|&p| plan.participants[p].streams.is_empty());
        let order: Vec<usize> = publishers.chain(receivers).collect();
        let mut media = vec![None; plan.participants.len()];
        let mut result = Ok(());
        for p in order {
            let part = &plan.participants[p];
            let room = &plan.rooms[part.room as usize];
            let senders = room
                .members
                .iter()
                .filter(|&&q| !plan.participants[q as usize].streams.is_empty())
                .count();
            if !part.streams.is_empty() && senders > 1 {
                result = Err(anyhow!(
                    "room {}: with WebRTC legs a participant either sends or receives (one sender a room)",
                    room.name
                ));
                break;
            }
            let socket = &self.stun_sockets[p];
            let start_ns = self.now();
            let leg = if part.streams.is_empty() {
                crate::webrtc::subscribe(api, &room.name, &part.name, socket, LATCH_TIMEOUT)
            } else {
                let tracks: Vec<(u32, Kind)> = part
                    .streams
                    .iter()
                    .map(|&s| {
                        let s = &plan.streams[s as usize];
                        (s.ssrc, s.profile.kind)
                    })
                    .collect();
                crate::webrtc::publish(api, &room.name, &part.name, &tracks, socket, LATCH_TIMEOUT)
            };
            let leg = match leg {
                Ok(l) => l,
                Err(e) => {
                    result =
                        Err(e.context(format!("WebRTC leg of {} in {}", part.name, room.name)));
                    break;
                }
            };
            self.control.calls += if part.streams.is_empty() { 2 } else { 1 };
            world.presence[p].set(
                Window {
                    start_ns,
                    end_ns: self.now(),
                },
                true,
            );
            media[p] = Some(leg.relay);
            self.consent[p] = Some((leg.relay, leg.ice, leg.local_ufrag));
            self.srtp[p] = Some(leg.srtp);
        }
        self.apis = apis;
        result?;
        self.media = vec![media.iter().flatten().next().copied()];
        let Some(first) = self.media[0] else {
            bail!("no participant joined at the start")
        };
        Ok(plan
            .streams
            .iter()
            .map(|s| vec![media[s.participant as usize].unwrap_or(first)])
            .collect())
    }

    /// PUTs participant `p`; returns the call's window and the relay's reply.
    fn join(&mut self, p: usize) -> Result<(Window, Joined)> {
        let part = &self.plan.participants[p];
        let room = &self.plan.rooms[part.room as usize];
        let body = self.join_body(p);
        let start_ns = self.now();
        let joined = self
            .timed_on(part.relay as usize, |api| {
                api.put_participant(&room.name, &part.name, &body)
            })
            .with_context(|| format!("adding participant {} to room {}", part.name, room.name))?;
        Ok((
            Window {
                start_ns,
                end_ns: self.now(),
            },
            joined,
        ))
    }

    /// The body of participant `p`'s PUT: its tracks, subscription and (fixed) address.
    fn join_body(&self, p: usize) -> Value {
        let part = &self.plan.participants[p];
        let tracks: Vec<Value> = part
            .streams
            .iter()
            .map(|&s| {
                let st = &self.plan.streams[s as usize];
                json!({"ssrc": st.ssrc, "kind": st.profile.kind.media()})
            })
            .collect();
        let subscribe = match &part.subscribe {
            Subscribe::All => json!("all"),
            Subscribe::List(l) => {
                json!(
                    l.iter()
                        .map(|&q| self.plan.participants[q as usize].name.as_str())
                        .collect::<Vec<_>>()
                )
            }
        };
        let mut body = json!({"tracks": tracks, "subscribe": subscribe});
        if self.scenario.addressing == Addressing::Fixed {
            body["address"] = json!(self.addrs[p].to_string());
        }
        body
    }

    /// Latches the participants present from the start, before the client threads run.
    fn latch_setup(&mut self, world: &mut World, joined: &[(usize, Joined)]) -> Result<()> {
        let mut clients = Vec::new();
        for (p, j) in joined {
            let ice = j.ice.as_ref().with_context(|| {
                format!("the relay gave participant {p} no ICE credentials to latch with")
            })?;
            clients.push((&self.stun_sockets[*p], j.media_address, ice));
            self.consent[*p] = Some((j.media_address, ice.clone(), format!("lg{p}")));
        }
        stun::latch_all(&clients, LATCH_TIMEOUT)?;
        // Until its address is latched, packets to a participant may go either way.
        let end_ns = self.now();
        for (p, _) in joined {
            let start_ns = world.presence[*p].first_start().unwrap_or(0);
            world.presence[*p] = Switch::default();
            world.presence[*p].set(Window { start_ns, end_ns }, true);
        }
        Ok(())
    }

    /// Latches a participant that joins while the clients run: its client thread sees the
    /// Binding success and raises its flag. Returns when latched.
    fn latch_live(&self, p: usize, joined: &Joined, shared: &Shared) -> Result<()> {
        let ice = joined
            .ice
            .as_ref()
            .with_context(|| format!("participant {p}: no ICE credentials"))?;
        let request = stun::binding_request(ice, &format!("lg{p}"))?;
        shared.latched[p].store(false, Ordering::Relaxed);
        let deadline = Instant::now() + LATCH_TIMEOUT;
        while Instant::now() < deadline {
            let _ = self.stun_sockets[p].send_to(&request, joined.media_address);
            let resend = Instant::now() + stun::RESEND;
            while Instant::now() < resend {
                if shared.latched[p].load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        bail!("participant {p} got no STUN Binding success within {LATCH_TIMEOUT:?}")
    }

    /// Makes one scheduled change. Failures are counted and reported, not fatal.
    fn apply(&mut self, event: Event, world: &mut World, shared: &Shared) {
        let result = match event {
            Event::Join(p) => self.join(p as usize).and_then(|(mut window, joined)| {
                if self.scenario.addressing == Addressing::Stun {
                    self.latch_live(p as usize, &joined, shared)?;
                    window.end_ns = self.now();
                    if let Some(ice) = &joined.ice {
                        self.consent[p as usize] =
                            Some((joined.media_address, ice.clone(), format!("lg{p}")));
                    }
                }
                if self.apis.len() > 1 {
                    self.await_fleet(&[p as usize])?;
                    window.end_ns = self.now();
                }
                world.presence[p as usize].set(window, true);
                shared.active[p as usize].store(true, Ordering::Relaxed);
                self.control.joins += 1;
                let relay = self.plan.participants[p as usize].relay as usize;
                if Some(joined.media_address) != self.media.get(relay).copied().flatten() {
                    self.note(format!("participant {p} was given another media address"));
                }
                Ok(())
            }),
            Event::Leave(p) => {
                shared.active[p as usize].store(false, Ordering::Relaxed);
                self.consent[p as usize] = None;
                let part = &self.plan.participants[p as usize];
                let room = &self.plan.rooms[part.room as usize].name;
                let start_ns = self.now();
                self.timed_on(part.relay as usize, |api| {
                    api.delete_participant(room, &part.name)
                })
                .map(|()| {
                    world.presence[p as usize].set(
                        Window {
                            start_ns,
                            end_ns: self.now(),
                        },
                        false,
                    );
                    self.control.leaves += 1;
                })
            }
            Event::AddRule(r) => {
                let body = self.rule_body(r);
                let start_ns = self.now();
                self.timed(|api| api.post_rule(&body)).map(|id| {
                    world.rules[r].active.set(
                        Window {
                            start_ns,
                            end_ns: self.now(),
                        },
                        true,
                    );
                    self.rule_ids[r] = Some(id);
                    self.control.rules_added += 1;
                })
            }
            Event::LiftRule(r) => self.lift(r, "loadgen churn", Some(world)),
            Event::JoinBurst { first, count } => self.join_burst(first, count, world, shared),
        };
        if let Err(e) = result {
            self.note(format!("{e:#}"));
        }
    }

    /// Repeats each latched client's Binding request every `CONSENT_INTERVAL`, spread out, as
    /// ICE consent freshness does (RFC 7675 §5.1), so clients that only listen stay latched.
    fn keep_consent(&mut self) {
        let now = self.now();
        let n = self.consent.len() as u64;
        if self.stun_sockets.is_empty() || n == 0 {
            self.consent_ns = now;
            return;
        }
        let interval = CONSENT_INTERVAL.as_nanos() as u64;
        let due = (n * now.saturating_sub(self.consent_ns) / interval).min(n);
        if due == 0 {
            return;
        }
        self.consent_ns = now;
        for _ in 0..due {
            let p = self.consent_next;
            self.consent_next = (p + 1) % self.consent.len();
            if let Some((relay, ice, ufrag)) = &self.consent[p]
                && let Ok(request) = stun::binding_request(ice, ufrag)
            {
                let _ = self.stun_sockets[p].send_to(&request, relay);
            }
        }
    }

    /// Joins participants `first..first + count` at once over the webinar's connections, each
    /// connection taking the next join when its last one returned, and times every call.
    fn join_burst(
        &mut self,
        first: u32,
        count: u32,
        world: &mut World,
        shared: &Shared,
    ) -> Result<()> {
        let connections = self.scenario.webinar.as_ref().map_or(1, |w| w.connections);
        while self.burst_apis.len() < connections {
            self.burst_apis.push(Api::new(
                &self.scenario.control,
                self.scenario.token.as_deref(),
            ));
        }
        let jobs: Vec<(usize, String, String, Value)> = (first..first + count)
            .map(|p| {
                let p = p as usize;
                let part = &self.plan.participants[p];
                let room = self.plan.rooms[part.room as usize].name.clone();
                (p, room, part.name.clone(), self.join_body(p))
            })
            .collect();
        let start = self.start;
        let now = || start.elapsed().as_nanos() as u64;
        let started = now();
        let next = AtomicUsize::new(0);
        let apis = &self.burst_apis[..connections.min(jobs.len()).max(1)];
        let results: Vec<(usize, Window, Result<Joined>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = apis
                .iter()
                .map(|api| {
                    let (jobs, next) = (&jobs, &next);
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        while let Some((p, room, name, body)) =
                            jobs.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            let start_ns = now();
                            let r = api.put_participant(room, name, body);
                            out.push((
                                *p,
                                Window {
                                    start_ns,
                                    end_ns: now(),
                                },
                                r,
                            ));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("join threads do not panic"))
                .collect()
        });
        let mut us = Vec::with_capacity(results.len());
        let mut joined = Vec::with_capacity(results.len());
        let mut failed = 0;
        let mut last_end = started;
        for (p, window, r) in results {
            let call_us = (window.end_ns - window.start_ns) / 1_000;
            us.push(call_us);
            last_end = last_end.max(window.end_ns);
            self.control.calls += 1;
            self.control.slowest_call_ms = self
                .control
                .slowest_call_ms
                .max((call_us as f64 / 100.0).round() / 10.0);
            match r {
                Ok(j) => joined.push((p, window, j)),
                Err(e) => {
                    failed += 1;
                    self.control.failed += 1;
                    self.note(format!("{e:#}"));
                }
            }
        }
        if self.scenario.addressing == Addressing::Stun {
            self.latch_burst(&joined, shared)?;
        }
        let latched_ns = self.now();
        for (p, mut window, j) in joined.iter().cloned() {
            if self.scenario.addressing == Addressing::Stun {
                // Until its address is latched, packets to it may go either way.
                window.end_ns = latched_ns;
                if let Some(ice) = &j.ice {
                    self.consent[p] = Some((j.media_address, ice.clone(), format!("lg{p}")));
                }
            }
            world.presence[p].set(window, true);
            shared.active[p].store(true, Ordering::Relaxed);
            self.control.joins += 1;
        }
        self.join_us.extend_from_slice(&us);
        let send_from_ns = shared.send_from_ns;
        self.control.join_bursts.push(Burst {
            at_s: (started.saturating_sub(send_from_ns) as f64 / 1e6).round() / 1e3,
            joins: joined.len() as u64,
            failed,
            span_ms: ((last_end - started) as f64 / 1e5).round() / 10.0,
            latency_ms: JoinLatency::of(&mut us).unwrap_or_default(),
        });
        Ok(())
    }

    /// Latches the participants of a burst with STUN: the client threads see the Binding
    /// successes of the participants they read; the controller reads those of the others from
    /// its clones of their sockets (nobody else reads them). Returns when all are latched.
    fn latch_burst(&self, joined: &[(usize, Window, Joined)], shared: &Shared) -> Result<()> {
        let mut pending = Vec::with_capacity(joined.len());
        for (p, _, j) in joined {
            let ice = j
                .ice
                .as_ref()
                .with_context(|| format!("participant {p}: no ICE credentials"))?;
            let request = stun::binding_request(ice, &format!("lg{p}"))?;
            shared.latched[*p].store(false, Ordering::Relaxed);
            pending.push((*p, j.media_address, request));
        }
        let deadline = Instant::now() + LATCH_TIMEOUT;
        let mut buf = [0u8; 2048];
        while !pending.is_empty() && Instant::now() < deadline {
            for (p, relay, request) in &pending {
                let _ = self.stun_sockets[*p].send_to(request, relay);
            }
            let resend = Instant::now() + stun::RESEND;
            while !pending.is_empty() && Instant::now() < resend {
                pending.retain(|(p, _, _)| {
                    if self.plan.participants[*p].read {
                        return !shared.latched[*p].load(Ordering::Relaxed);
                    }
                    let mut latched = false;
                    while let Ok(n) = self.stun_sockets[*p].recv(&mut buf) {
                        latched |= stun::is_binding_success(&buf[..n]);
                    }
                    !latched
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !pending.is_empty() {
            bail!(
                "{} participants of a burst got no STUN Binding success within {LATCH_TIMEOUT:?}",
                pending.len()
            );
        }
        Ok(())
    }

    fn lift(&mut self, r: usize, reason: &str, world: Option<&mut World>) -> Result<()> {
        let Some(id) = self.rule_ids[r].take() else {
            return Ok(());
        };
        let start_ns = self.now();
        self.timed(|api| api.delete_rule(&id, reason))?;
        if let Some(world) = world {
            world.rules[r].active.set(
                Window {
                    start_ns,
                    end_ns: self.now(),
                },
                false,
            );
        }
        self.control.rules_lifted += 1;
        Ok(())
    }

    fn rule_body(&self, r: usize) -> Value {
        let rule = &self.plan.rules[r];
        let participants: Vec<Value> = rule
            .targets
            .iter()
            .map(|&p| {
                let part = &self.plan.participants[p as usize];
                json!({"room": self.plan.rooms[part.room as usize].name, "participant": part.name})
            })
            .collect();
        let expires = SystemTime::now() + Duration::from_secs(3_600);
        json!({
            "match": {"participants": participants},
            "direction": rule.direction.as_str(),
            "media": rule.media.as_str(),
            "basis": {"authority": "loadgen", "reference": format!("churn-{r}"), "jurisdiction": "ZZ"},
            "expires_at": humantime::format_rfc3339_seconds(expires).to_string(),
        })
    }

    /// Lifts the rules still in force and closes every room made.
    fn teardown(&mut self) {
        for r in 0..self.rule_ids.len() {
            if let Err(e) = self.lift(r, "loadgen run finished", None) {
                self.note(format!("{e:#}"));
            }
        }
        for i in std::mem::take(&mut self.rooms_made) {
            let name = &self.plan.rooms[i].name;
            if let Err(e) = self.timed(|api| api.delete_room(name)) {
                self.note(format!("{e:#}"));
            }
        }
        if let Some(mut ng) = self.rtpengine.take() {
            let before = ng.calls;
            if let Err(e) = ng.teardown() {
                self.note(format!("{e:#}"));
            }
            self.control.calls += ng.calls - before;
        }
    }

    /// Keeps an error for the report (the first few; the count of failed calls has them all).
    fn note(&mut self, e: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }

    /// Makes one API call on the first relay, counting it and timing it.
    fn timed<T>(&mut self, f: impl FnOnce(&Api) -> Result<T>) -> Result<T> {
        self.timed_on(0, f)
    }

    /// Makes one API call on relay `relay`, counting it and timing it.
    fn timed_on<T>(&mut self, relay: usize, f: impl FnOnce(&Api) -> Result<T>) -> Result<T> {
        let Some(api) = self.apis.get(relay) else {
            bail!("no control API")
        };
        let t = Instant::now();
        let r = f(api);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        self.control.calls += 1;
        self.control.slowest_call_ms = self.control.slowest_call_ms.max((ms * 10.0).round() / 10.0);
        if r.is_err() {
            self.control.failed += 1;
        }
        r
    }
}

/// Multi-relay mode: each participant's socket made in its relay's namespace (if given), bound
/// to the address that namespace uses to reach the relay's control address. Returns them in
/// participant order.
fn bind_fleet(scenario: &Scenario, plan: &Plan, nets: &[Arc<Netns>]) -> Result<Vec<UdpSocket>> {
    let mut sockets: Vec<Option<UdpSocket>> = plan.participants.iter().map(|_| None).collect();
    for (relay, control) in scenario.controls().into_iter().enumerate() {
        let to = control
            .to_socket_addrs()
            .with_context(|| format!("control address {control}"))?
            .next()
            .with_context(|| format!("control address {control} resolves to nothing"))?;
        let ns = nets.get(relay).map(Arc::as_ref);
        let mine: Vec<usize> = (0..plan.participants.len())
            .filter(|&p| plan.participants[p].relay as usize == relay)
            .collect();
        let made = netns::run_in(ns, || -> Result<Vec<UdpSocket>> {
            bind(netns::source_for(to)?, mine.len())
        })??;
        for (p, socket) in mine.into_iter().zip(made) {
            sockets[p] = Some(socket);
        }
    }
    sockets
        .into_iter()
        .map(|s| s.context("a participant placed on no relay"))
        .collect()
}

/// Which of `names` a relay's `GET /v1/rooms/{room}` reply does not list.
fn missing<'a>(reply: &Value, names: &[&'a str]) -> Vec<&'a str> {
    let listed: Vec<&str> = reply
        .get("participants")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|p| p.get("participant").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    names
        .iter()
        .filter(|n| !listed.contains(n))
        .copied()
        .collect()
}

/// One UDP socket per participant on `ip`, non-blocking, with large buffers.
fn bind(ip: IpAddr, n: usize) -> Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let domain = socket2::Domain::for_address(SocketAddr::new(ip, 0));
            let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
            crate::io::size_buffers(&s, SOCKET_BUFFER);
            s.set_nonblocking(true)?;
            // Best effort: without timestamps only the split of latency is missing.
            let _ = crate::io::timestamp_arrivals(std::os::fd::AsRawFd::as_raw_fd(&s));
            s.bind(&SocketAddr::new(ip, 0).into())?;
            Ok(s.into())
        })
        .collect::<std::io::Result<_>>()
        .context("binding client sockets (raise the open-file limit for many participants)")
}

fn progress_bar(show: bool, duration_ns: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(duration_ns / 1_000_000), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Running send and receive rates for the progress bar.
#[derive(Default)]
struct Rates {
    last_ns: u64,
    last: (u64, u64),
}

impl Rates {
    fn update(&mut self, bar: &ProgressBar, shared: &Shared, now: u64) {
        if now < self.last_ns + 250_000_000 || bar.is_hidden() {
            return;
        }
        let sent: u64 = shared
            .progress
            .iter()
            .map(|p| p.sent.load(Ordering::Relaxed))
            .sum();
        let got: u64 = shared
            .progress
            .iter()
            .map(|p| p.received.load(Ordering::Relaxed))
            .sum();
        let dt = (now - self.last_ns) as f64 / 1e9;
        bar.set_position(now.saturating_sub(shared.send_from_ns) / 1_000_000);
        bar.set_message(format!(
            "sent {sent} ({:.0}/s)  received {got} ({:.0}/s)",
            (sent - self.last.0) as f64 / dt,
            (got - self.last.1) as f64 / dt
        ));
        self.last_ns = now;
        self.last = (sent, got);
    }
}

fn write_histogram_log(
    path: &PathBuf,
    rx: mpsc::Receiver<Interval>,
    start: SystemTime,
) -> Result<()> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut merged: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for i in rx.try_iter() {
        match merged.get_mut(&i.index) {
            Some(h) => {
                let _ = h.add(&i.histogram);
            }
            None => {
                merged.insert(i.index, i.histogram);
            }
        }
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("loadgen one-way latency, microseconds")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1_000.0)
        .begin_log_with(&mut file, &mut serializer)?;
    for (index, h) in &merged {
        writer
            .write_histogram(h, Duration::from_secs(*index), Duration::from_secs(1), None)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    drop(writer);
    file.flush()?;
    Ok(())
}

/// File descriptors wanted beyond the clients' sockets.
const FD_SPARE: u64 = 256;
/// Errors kept for the report.
const MAX_ERRORS: usize = 20;
/// How often each client repeats its Binding request (RFC 7675 §5.1 suggests 5 s on average).
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);
/// How long every relay of a fleet may take to list the participants added on the others.
const FLEET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to latch its address with STUN.
const LATCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Requested kernel buffer per client socket (capped by rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 1 << 20;
/// Receive buffer of a socket nobody reads (the kernel's minimum is about 2 KiB).
const SINK_BUFFER: usize = 8 << 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Send;

    #[test]
    fn direct_run_accounts_for_every_packet() {
        let mut s = Scenario::uniform(3, 3, Send::Mixed);
        s.target = Target::Direct;
        s.duration = 0.5;
        s.drain_ms = 200;
        let r = run(&s).unwrap();
        assert!(r.sent > 100, "{r:?}");
        // Rooms of three: every packet goes to two receivers.
        assert_eq!(r.expected, 2 * r.sent);
        assert_eq!((r.lost, r.duplicates, r.misdelivered), (0, 0, 0));
        assert_eq!(r.received, r.expected);
        assert!(r.per_profile.contains_key("audio") && r.per_profile.contains_key("video"));
        assert!(r.latency_us.max > 0);
    }

    #[test]
    fn packet_budget_stops_the_run() {
        let mut s = Scenario::uniform(2, 2, Send::Audio);
        s.target = Target::Direct;
        s.duration = 0.5;
        s.drain_ms = 100;
        s.max_packets = 20;
        let r = run(&s).unwrap();
        assert!(r.sent <= 20 && r.sent > 0, "{r:?}");
        assert_eq!(r.lost, 0);
    }

    #[test]
    fn a_relay_lists_whom_it_knows() {
        let reply = json!({"room": "lg-r0", "participants": [
            {"room": "lg-r0", "participant": "p0", "node": "a"},
            {"room": "lg-r0", "participant": "p2", "node": "c"}]});
        assert_eq!(missing(&reply, &["p0", "p1", "p2"]), ["p1"]);
        assert_eq!(missing(&json!({"error": {}}), &["p0"]), ["p0"]);
        assert!(missing(&reply, &[]).is_empty());
    }

    #[test]
    fn a_missing_namespace_fails_the_setup() {
        let mut s = Scenario::uniform(1, 2, Send::Audio);
        s.control = "127.0.0.1:9,127.0.0.1:10".into();
        s.netns = vec!["loadgen-no-such-ns-a".into(), "loadgen-no-such-ns-b".into()];
        s.duration = 0.2;
        let e = run(&s).unwrap_err();
        assert!(
            format!("{e:#}").contains("network namespace loadgen-no-such-ns-a does not exist"),
            "{e:#}"
        );
    }

    #[test]
    fn setup_failure_is_an_error() {
        let mut s = Scenario::uniform(1, 2, Send::Audio);
        s.addressing = Addressing::Fixed;
        // Nothing listens on port 9 of loopback.
        s.control = "127.0.0.1:9".into();
        s.duration = 0.2;
        assert!(run(&s).is_err());
    }
}

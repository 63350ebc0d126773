//! `cairn agent`: a background process that stays joined to the network
//! and runs object commands ([`Call`]) for `cairn` processes of the same
//! config, so that a script's `cairn put` or `cairn get` does not pay for
//! opening the cache and dialling the nodes each time (sccache's server
//! and Nailgun work the same way).
//!
//! - The first command that finds no agent starts one (opening the key,
//!   asking its passphrase if it has one, and handing the secret over a
//!   pipe) and waits until it has joined; the agent ends after
//!   `agent_idle` (default 5 min) without a command, on `cairn agent
//!   stop`, on SIGTERM, or once the binary, config or key file changes.
//! - It listens on `sock` in a 0700 directory beside the cache
//!   (`<cache_dir>-agent/`), answers only its own user, and logs to `log`
//!   there. One agent per cache: it holds `lock` for its whole life.
//! - Files named by a command are read and written by the agent, relative
//!   to the caller's working directory; standard input and output, stderr
//!   lines and progress travel as frames ([`crate::wire`]).
//! - It reads every object at the newest head, as a new process would.
//! - Anything that keeps a command from reaching an agent (none can start,
//!   the socket path is too long, `CAIRN_AGENT=off`, `agent_idle = "off"`)
//!   runs it in this process instead.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use cairn_cli::config::{self, ConfigFile, open_key};
use cairn_client::Client;
use cairn_crypto::RootSecret;
use futures::FutureExt;
use indicatif::ProgressBar;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands::Call;
use crate::io::{BarSlot, ChannelReader, Far, Io, bar_style};
use crate::wire::{self, Ask, CHUNK, Stamp, Tell};

/// How long a command waits for a starting agent to join the network.
const START_WAIT: Duration = Duration::from_secs(20);
/// Longest path of a Unix socket (`sun_path` less its final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where an agent of a config lives.
struct Place {
    dir: PathBuf,
    socket: PathBuf,
    lock: PathBuf,
    log: PathBuf,
    stamp: Stamp,
}

impl Place {
    /// The agent's files for the config at `path`; `None` if its socket
    /// path would be too long.
    fn of(path: &Path, file: &ConfigFile) -> anyhow::Result<Option<Self>> {
        let path = std::path::absolute(path)?;
        // Not `client_config`: a command that finds its agent reads no
        // identity or network key file.
        let cache = file.cache_path(&path);
        let mut name = cache.file_name().unwrap_or_default().to_os_string();
        name.push("-agent");
        let dir = cache.with_file_name(name);
        let socket = dir.join("sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Ok(None);
        }
        let stamp = stamp(&path, &file.key_path(&path));
        Ok(Some(Self { lock: dir.join("lock"), log: dir.join("log"), socket, dir, stamp }))
    }
}

/// What a caller and its agent must agree on.
fn stamp(config: &Path, key: &Path) -> Stamp {
    let exe = std::env::current_exe().unwrap_or_default();
    let files = [exe.as_path(), config, key]
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => {
                let t = m.modified().unwrap_or(UNIX_EPOCH).duration_since(UNIX_EPOCH).unwrap_or_default();
                (m.len(), t.as_nanos() as i128)
            }
            Err(_) => (0, 0),
        })
        .collect();
    Stamp { config: config.to_path_buf(), files }
}

/// Runs `call`: through the config's agent (started if none runs), else here.
pub fn call(flag: Option<PathBuf>, call: Call) -> anyhow::Result<()> {
    let path = config::config_path(flag);
    if std::env::var_os("CAIRN_AGENT").is_some_and(|v| v == "off") {
        return local(path, call);
    }
    let file = ConfigFile::load(&path)?;
    let (Some(_), Some(place)) = (file.agent_idle()?, Place::of(&path, &file)?) else {
        return local(path, call);
    };
    let stream = match UnixStream::connect(&place.socket) {
        Ok(s) => s,
        Err(_) => match start(&path, &file, &place)? {
            Some(s) => s,
            None => return local(path, call),
        },
    };
    match converse(stream, &place.stamp, call.clone())? {
        Some(result) => result,
        None => local(path, call),
    }
}

/// Runs `call` in this process.
fn local(path: PathBuf, call: Call) -> anyhow::Result<()> {
    crate::with_client(Some(path), |c| async move { call.run(c, &mut Io::local()).await }.boxed())
}

/// Starts an agent and connects to it; `None` if it cannot be reached
/// (another is starting or ending and does not show up in time). An
/// agent that cannot join the network says why: that is the error.
fn start(path: &Path, file: &ConfigFile, place: &Place) -> anyhow::Result<Option<UnixStream>> {
    let root = open_key(&file.key_path(path))?;
    std::fs::create_dir_all(&place.dir).with_context(|| format!("cannot create {}", place.dir.display()))?;
    std::fs::set_permissions(&place.dir, std::fs::Permissions::from_mode(0o700))?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&place.log)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(std::path::absolute(path)?)
        .args(["agent", "serve"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this command leaves it be.
        .process_group(0)
        .spawn()
        .context("cannot start cairn agent")?;
    let mut stdin = child.stdin.take().context("no pipe to the agent")?;
    stdin.write_all(root.as_bytes())?;
    drop(stdin);
    let stdout = child.stdout.take().context("no pipe from the agent")?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let said = rx.recv_timeout(START_WAIT).unwrap_or_default();
    let said = said.trim();
    if let Some(e) = said.strip_prefix("error: ") {
        bail!("{e}");
    }
    match said {
        "ready" => return Ok(UnixStream::connect(&place.socket).ok()),
        "busy" => {}
        _ => {
            tracing::info!(log = %place.log.display(), "the agent did not start; running the command here");
            return Ok(None);
        }
    }
    // Another agent holds the lock: starting, or ending. Wait for its socket.
    let until = Instant::now() + START_WAIT;
    while Instant::now() < until {
        if let Ok(s) = UnixStream::connect(&place.socket) {
            return Ok(Some(s));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(said, "no agent came up; running the command here");
    Ok(None)
}

/// Sends `call` and plays back what the agent says; `None`: refused.
fn converse(mut stream: UnixStream, stamp: &Stamp, call: Call) -> anyhow::Result<Option<anyhow::Result<()>>> {
    let tty = std::io::stderr().is_terminal();
    let run = Ask::Run { stamp: stamp.clone(), cwd: std::env::current_dir()?, tty, umask: crate::io::umask(), call };
    wire::write(&mut stream, &run)?;
    let mut stdout = std::io::stdout().lock();
    let mut bar: Option<ProgressBar> = None;
    loop {
        let Some(tell) = wire::read::<Tell>(&mut stream)? else {
            bail!("the agent ended before the command did (its log is beside the cache, in *-agent/log)")
        };
        match tell {
            Tell::Stdout(bytes) => stdout.write_all(&bytes)?,
            Tell::Stderr(line) => match &bar {
                Some(b) => b.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            },
            Tell::WantStdin => {
                let mut to = stream.try_clone()?;
                std::thread::spawn(move || forward_stdin(&mut to));
            }
            Tell::Progress { what, pos, len } => {
                let b = bar.get_or_insert_with(|| match len {
                    Some(l) => ProgressBar::new(l).with_style(bar_style()),
                    None => ProgressBar::new_spinner(),
                });
                b.set_message(what);
                b.set_position(pos);
            }
            Tell::ProgressEnd => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
            Tell::Exit { error } => {
                stdout.flush()?;
                return Ok(Some(error.map_or(Ok(()), |e| Err(anyhow::anyhow!(e)))));
            }
            Tell::Refused { reason } => {
                tracing::debug!(reason, "the agent refused; running the command here");
                return Ok(None);
            }
            other => bail!("the agent answered {other:?} to a command"),
        }
    }
}

/// Sends standard input to the agent. A read error is not an end: the
/// connection is shut instead, and the agent's put fails.
fn forward_stdin(to: &mut UnixStream) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => {
                let _ = wire::write(to, &Ask::StdinEnd);
                return;
            }
            Ok(n) => {
                if wire::write(to, &Ask::Stdin(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// Sends `ask` to the config's agent and returns its answer, with where
/// the agent lives; `None` (and a line saying so) if none runs.
fn ask(flag: Option<PathBuf>, ask: &Ask) -> anyhow::Result<Option<(Place, Option<Tell>)>> {
    let path = config::config_path(flag);
    let file = ConfigFile::load(&path)?;
    let place = Place::of(&path, &file)?.context("the cache path is too long for an agent's socket")?;
    let Ok(mut s) = UnixStream::connect(&place.socket) else {
        println!("no agent runs for {}", path.display());
        return Ok(None);
    };
    wire::write(&mut s, ask)?;
    let answer = wire::read::<Tell>(&mut s)?;
    Ok(Some((place, answer)))
}

/// `cairn agent status`.
pub fn status(flag: Option<PathBuf>) -> anyhow::Result<()> {
    match ask(flag, &Ask::Status)? {
        None => {}
        Some((_, Some(Tell::Status { pid, up_secs, served, idle_secs, config }))) => println!(
            "agent {pid} for {}: up {up_secs} s, {served} commands run, ends after {idle_secs} s without one",
            config.display()
        ),
        Some((_, other)) => bail!("the agent answered {other:?} to a status request"),
    }
    Ok(())
}

/// `cairn agent stop`: asks the agent to end and waits until it has.
pub fn stop(flag: Option<PathBuf>) -> anyhow::Result<()> {
    let place = match ask(flag, &Ask::Stop)? {
        None => return Ok(()),
        Some((place, Some(Tell::Stopping))) => place,
        Some(_) => bail!("the agent did not agree to stop"),
    };
    // It holds its lock until it has left the network.
    let lock = std::fs::File::open(&place.lock)?;
    let until = Instant::now() + Duration::from_secs(120);
    while rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        if Instant::now() > until {
            bail!("the agent is still finishing its commands after 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("agent stopped");
    Ok(())
}

/// `cairn agent serve`: what a starting command runs. Reads the root
/// secret from standard input, says `ready` (or `busy`, or `error: …`)
/// on standard output, then serves until it should end.
pub fn serve(flag: Option<PathBuf>) -> anyhow::Result<()> {
    let path = std::path::absolute(config::config_path(flag))?;
    let file = ConfigFile::load(&path)?;
    let idle = file.agent_idle()?.unwrap_or(config::DEFAULT_AGENT_IDLE);
    let place = Place::of(&path, &file)?.context("the cache path is too long for an agent's socket")?;
    let mut secret = [0u8; 32];
    std::io::stdin().read_exact(&mut secret).context("no key on standard input")?;
    let root = RootSecret::from_bytes(secret);
    secret.fill(0);
    let mut said = std::io::stdout();
    let lock = std::fs::File::create(&place.lock)?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        writeln!(said, "busy")?;
        return Ok(());
    }
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let cfg = cairn_client::ClientConfig { read_freshness: Duration::ZERO, ..file.client_config(&path)? };
        let client = match Client::connect(&root, cfg).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                writeln!(said, "error: cannot join the network: {e:#}")?;
                return Ok(());
            }
        };
        drop(root);
        let _ = std::fs::remove_file(&place.socket);
        let listener = UnixListener::bind(&place.socket)?;
        std::fs::set_permissions(&place.socket, std::fs::Permissions::from_mode(0o600))?;
        writeln!(said, "ready")?;
        tracing::info!(config = %path.display(), pid = std::process::id(), "agent ready");
        let state = Arc::new(State {
            started: Instant::now(),
            last: std::sync::Mutex::new(Instant::now()),
            served: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            idle,
            stamp: place.stamp.clone(),
            uid: std::fs::metadata("/proc/self")?.uid(),
        });
        let result = accept(&client, &listener, &place, &state).await;
        drop(listener);
        let _ = std::fs::remove_file(&place.socket);
        match Arc::try_unwrap(client) {
            Ok(c) => c.shutdown().await,
            Err(c) => c.settle().await,
        }
        tracing::info!("agent ended");
        drop(lock);
        result
    })
}

/// What the agent's connections share.
struct State {
    started: Instant,
    /// When the last command ended.
    last: std::sync::Mutex<Instant>,
    served: AtomicU64,
    active: AtomicUsize,
    stop: CancellationToken,
    idle: Duration,
    stamp: Stamp,
    uid: u32,
}

impl State {
    fn idle_for(&self) -> Duration {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// Accepts connections until the agent should end; then waits for the
/// commands running.
async fn accept(
    client: &Arc<Client>,
    listener: &UnixListener,
    place: &Place,
    state: &Arc<State>,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let config = place.stamp.config.clone();
    let key = ConfigFile::load(&config).map(|f| f.key_path(&config)).unwrap_or_default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                if stream.peer_cred().map(|c| c.uid()).ok() != Some(state.uid) {
                    tracing::warn!("refused a connection of another user");
                    continue;
                }
                let (client, state) = (Arc::clone(client), Arc::clone(state));
                tasks.spawn(async move {
                    if let Err(e) = connection(&client, stream, &state).await {
                        tracing::debug!(error = %e, "agent connection");
                    }
                });
            }
            Some(_) = tasks.join_next() => {}
            _ = tick.tick() => {
                if state.active.load(Ordering::SeqCst) == 0 && state.idle_for() >= state.idle {
                    tracing::info!(idle = ?state.idle, "no command for a while; ending");
                    break;
                }
                if stamp(&config, &key) != state.stamp || !place.socket.exists() {
                    tracing::info!("the binary, config, key or socket changed; ending");
                    break;
                }
            }
            () = state.stop.cancelled() => break,
            _ = term.recv() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One caller: a status, a stop, or a command with its input and output.
async fn connection(client: &Client, stream: tokio::net::UnixStream, state: &State) -> anyhow::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let Some(ask) = wire::recv::<Ask>(&mut rd).await? else { return Ok(()) };
    let (stamp, cwd, tty, umask, call) = match ask {
        Ask::Status => {
            let status = Tell::Status {
                pid: std::process::id(),
                up_secs: state.started.elapsed().as_secs(),
                served: state.served.load(Ordering::Relaxed),
                idle_secs: state.idle.as_secs(),
                config: state.stamp.config.clone(),
            };
            return Ok(wire::send(&mut wr, &status).await?);
        }
        Ask::Stop => {
            state.stop.cancel();
            return Ok(wire::send(&mut wr, &Tell::Stopping).await?);
        }
        Ask::Run { stamp, cwd, tty, umask, call } => (stamp, cwd, tty, umask, call),
        other => bail!("a connection began with {other:?}"),
    };
    if stamp != state.stamp || state.stop.is_cancelled() {
        let reason = "this agent runs another binary, config or key file, or is ending".to_string();
        return Ok(wire::send(&mut wr, &Tell::Refused { reason }).await?);
    }
    state.active.fetch_add(1, Ordering::SeqCst);
    let result = command(client, rd, wr, cwd, tty, umask, call).await;
    state.served.fetch_add(1, Ordering::Relaxed);
    *state.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    state.active.fetch_sub(1, Ordering::SeqCst);
    result
}

/// Runs a command for a caller. A caller that leaves (Ctrl-C) cancels it.
async fn command(
    client: &Client,
    mut rd: tokio::net::unix::OwnedReadHalf,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    cwd: PathBuf,
    tty: bool,
    umask: u32,
    call: Call,
) -> anyhow::Result<()> {
    let (tell, mut told) = mpsc::channel::<Tell>(16);
    let (out_w, out_r) = tokio::io::duplex(CHUNK);
    let (input, stdin) = mpsc::channel(4);
    let bar = BarSlot::default();
    let far =
        Far { tell: tell.clone(), stdin: Some(Box::new(ChannelReader::new(stdin))), tty, umask, bar: Arc::clone(&bar) };
    let mut io = Io::far(cwd, Box::new(out_w), far);
    let gone = CancellationToken::new();
    let done = CancellationToken::new();
    let writer = async move {
        while let Some(t) = told.recv().await {
            wire::send(&mut wr, &t).await?;
        }
        Ok::<_, wire::FrameError>(())
    };
    let reader = read_caller(&mut rd, input, gone.clone());
    let side = async {
        let pump = pump_stdout(out_r, tell.clone());
        let poll = poll_bar(&bar, tell.clone(), done.clone());
        let (gone, done) = (gone.clone(), done.clone());
        let run = async move {
            let r = tokio::select! {
                r = call.run(client, &mut io) => Some(r),
                () = gone.cancelled() => None,
            };
            drop(io);
            done.cancel();
            r
        };
        let (r, pumped, ()) = tokio::join!(run, pump, poll);
        if let Some(r) = r {
            let error = match (r, pumped) {
                (Err(e), _) | (Ok(()), Err(e)) => Some(format!("{e:#}")),
                (Ok(()), Ok(())) => None,
            };
            let _ = tell.send(Tell::Exit { error }).await;
        }
        drop(tell);
    };
    // The reader runs until the caller hangs up; the rest ends by itself.
    let reading = async {
        reader.await;
        std::future::pending::<std::convert::Infallible>().await
    };
    let ((), written) = tokio::select! {
        both = async { tokio::join!(side, writer) } => both,
        never = reading => match never {},
    };
    Ok(written?)
}

/// Reads the caller's frames: standard input, then nothing until it
/// hangs up. An end before `StdinEnd` is an error for the reader of the
/// input; any end cancels `gone`.
async fn read_caller(
    rd: &mut tokio::net::unix::OwnedReadHalf,
    input: mpsc::Sender<std::io::Result<Vec<u8>>>,
    gone: CancellationToken,
) {
    let mut input = Some(input);
    loop {
        match wire::recv::<Ask>(rd).await {
            Ok(Some(Ask::Stdin(bytes))) => {
                if let Some(tx) = &input {
                    let _ = tx.send(Ok(bytes)).await;
                }
            }
            Ok(Some(Ask::StdinEnd)) => input = None,
            other => {
                if let Some(tx) = input.take() {
                    let why = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the caller's input ended early");
                    let _ = tx.send(Err(why)).await;
                }
                if let Ok(Some(ask)) = other {
                    tracing::debug!(?ask, "unexpected frame from a caller");
                }
                gone.cancel();
                return;
            }
        }
    }
}

/// Sends what the command writes to standard output, in chunks.
async fn pump_stdout(mut out: tokio::io::DuplexStream, tell: mpsc::Sender<Tell>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        tell.send(Tell::Stdout(buf[..n].to_vec())).await.map_err(|_| anyhow::anyhow!("the caller left"))?;
    }
}

/// Sends the command's progress bar ten times a second, and its end.
async fn poll_bar(slot: &BarSlot, tell: mpsc::Sender<Tell>, done: CancellationToken) {
    let mut shown = false;
    loop {
        let ending = done.is_cancelled();
        let current = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((pb, what)) = current {
            if pb.is_finished() || ending {
                slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if std::mem::take(&mut shown) {
                    let _ = tell.send(Tell::ProgressEnd).await;
                }
            } else {
                shown = true;
                let _ = tell.send(Tell::Progress { what, pos: pb.position(), len: pb.length() }).await;
            }
        }
        if ending {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = done.cancelled() => {}
        }
    }
}

//! The processes the checker runs and breaks: `tally serve` instances, memcached, and a
//! handle on an already running Cassandra node.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::doors::Endpoint;

/// How long a starting process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A free loopback port. The checker keeps each process on the same ports across restarts, so
/// clients never need to learn new addresses.
///
/// Taken below the system's ephemeral range: a port the system handed out would be handed
/// out again, as the local end of some outgoing connection, while the process that is to
/// listen on it starts or restarts (a run failed with "Address already in use" so).
pub fn free_port() -> anyhow::Result<u16> {
    let below = ephemeral_ports_start().unwrap_or(32_768);
    let lowest = below.saturating_sub(12_000).max(1_024);
    for _ in 0..200 {
        let port = rand::random_range(lowest..below);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?.local_addr()?.port())
}

/// The first port of the system's ephemeral range (Linux), if it says.
fn ephemeral_ports_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Sends a signal by name (`KILL`, `STOP`, `CONT`) with the system's `kill`.
async fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().await?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// One `tally serve` process.
pub struct Instance {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// An instance of the running binary on fixed ports, with `extra` flags (store, cache,
    /// peers); its data directory and log live in `dir`.
    pub fn new(dir: &Path, extra: &[String], endpoint: &Endpoint) -> anyhow::Result<Self> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let mut args: Vec<String> = vec!["serve".into(), "--data-dir".into(), data.display().to_string()];
        for (flag, address) in
            [("--http", &endpoint.http), ("--grpc", &endpoint.grpc), ("--resp", &endpoint.resp)]
        {
            args.extend([flag.to_owned(), address.clone()]);
        }
        args.extend(extra.iter().cloned());
        Ok(Self { args, log: dir.join("server.log"), child: None })
    }

    /// Starts the process and waits until it says it listens.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the tally binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut child = Command::new(exe)
            .args(&self.args)
            .env("TALLY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start tally serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        match first {
            Ok(Ok(Some(line))) if line.starts_with("tally listening") => {}
            _ => bail!("tally serve did not start; its log is {}", self.log.display()),
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill_9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    pub async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().and_then(Child::id).context("instance is not running")?;
        signal(pid, name).await
    }
}

/// A memcached process from the system's package, restartable on its port.
pub struct Memcached {
    pub port: u16,
    child: Option<Child>,
}

/// Why [`Memcached::restart`] failed when another memcached holds its port.
const PORT_HELD: &str = "is held by another memcached";

impl Memcached {
    /// Starts memcached on a free port. A port that was free when picked may be taken by the
    /// time memcached binds it (another checker picked it too); then another port is tried.
    pub async fn start() -> anyhow::Result<Self> {
        let mut attempts = 0;
        loop {
            let mut m = Self { port: free_port()?, child: None };
            match m.restart().await {
                Ok(()) => return Ok(m),
                Err(e) if attempts < 5 && e.to_string().contains(PORT_HELD) => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let port = self.port.to_string();
        let child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-m", "64", "-u", "root"])
            .kill_on_drop(true)
            .spawn()
            .context("cannot start memcached (install Debian's memcached package)")?;
        let pid = child.id();
        self.child = Some(child);
        // Ready when our own process answers on the port, not merely when something does.
        let started = tokio::time::Instant::now();
        loop {
            match memcached_pid(self.port).await {
                Some(found) if Some(found) == pid => return Ok(()),
                Some(found) => {
                    self.stop().await?;
                    bail!("port {port} {PORT_HELD} (pid {found})");
                }
                None if started.elapsed() > Duration::from_secs(10) => {
                    bail!("memcached did not listen on port {port} within 10 s")
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// The pid the memcached listening on `port` reports in its `stats`, if one answers.
async fn memcached_pid(port: u16) -> Option<u32> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(b"stats\r\n").await.ok()?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next_line().await.ok()? {
        if let Some(pid) = line.strip_prefix("STAT pid ") {
            return pid.trim().parse().ok();
        }
        if line == "END" {
            break;
        }
    }
    None
}

/// A Cassandra node the checker did not start: paused through its pid file, restarted by a
/// command the caller gives.
pub struct CassandraNode {
    pub pid_file: PathBuf,
    pub restart_command: Option<String>,
}

impl CassandraNode {
    async fn pid(&self) -> anyhow::Result<u32> {
        let text = std::fs::read_to_string(&self.pid_file)
            .with_context(|| format!("cannot read the Cassandra pid file {}", self.pid_file.display()))?;
        text.trim().parse().with_context(|| format!("{} holds no pid", self.pid_file.display()))
    }

    pub async fn signal(&self, name: &str) -> anyhow::Result<()> {
        signal(self.pid().await?, name).await
    }

    /// Runs the restart command; it returns once the node serves CQL again.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let command = self.restart_command.as_deref().context("no Cassandra restart command given")?;
        let output = Command::new("sh").arg("-c").arg(command).output().await?;
        if !output.status.success() {
            bail!(
                "`{command}` failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two checkers may pick the same free port. The second memcached then cannot bind it,
    /// and before this check its readiness probe reached the first one, so the second checker
    /// shared (and restarted) a cache it did not own.
    #[tokio::test]
    async fn regression_a_memcached_on_a_taken_port_is_refused_not_mistaken_for_ours() {
        let mut first = Memcached::start().await.expect("memcached starts");
        let owner = first.child.as_ref().and_then(Child::id);
        let mut second = Memcached { port: first.port, child: None };
        let refused = second.restart().await.expect_err("the port is taken");
        assert!(refused.to_string().contains(PORT_HELD), "{refused}");
        assert_eq!(memcached_pid(first.port).await, owner, "the first memcached still serves its port");
        first.stop().await.expect("stop");
    }

    /// A run failed with "Address already in use": its instance's port, handed out by the
    /// system, had become the local end of another test's connection by the time it started.
    #[test]
    fn regression_check_ports_lie_below_the_ephemeral_range() {
        let below = ephemeral_ports_start().unwrap_or(32_768);
        for _ in 0..20 {
            let port = free_port().expect("a free port");
            assert!(port < below, "port {port} is in the ephemeral range, from {below}");
        }
    }
}

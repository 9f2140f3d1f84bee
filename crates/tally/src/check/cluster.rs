//! The processes the checker runs and breaks: `tally serve` instances, memcached, and a
//! handle on an already running Cassandra node.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::doors::Endpoint;

/// How long a starting process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A free loopback port. The checker keeps each process on the same ports across restarts, so
/// clients never need to learn new addresses.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?.local_addr()?.port())
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

impl Memcached {
    pub async fn start() -> anyhow::Result<Self> {
        let mut m = Self { port: free_port()?, child: None };
        m.restart().await?;
        Ok(m)
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
        self.child = Some(child);
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("memcached did not listen on port {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
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

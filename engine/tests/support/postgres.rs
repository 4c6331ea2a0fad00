//! A real PostgreSQL for tests: the shared server of `scripts/test.sh` (`DTOP_TEST_POSTGRES_URL`)
//! or a private cluster started here as the `postgres` user, and one fresh database per test.
//! Knows nothing about any crate's schema (dtop-engine's, dtop-worker's and dtop-lease's tests
//! include it).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a missing service must fail the test rather than be started here.
pub fn services_required() -> bool {
    std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The uid and gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no postgres user: install Debian's postgresql package");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// The directory of PostgreSQL's programs.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql)")
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    versions.pop().unwrap().join("bin")
}

/// A PostgreSQL cluster of this test alone, on loopback, stopped (by its PID) when dropped.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PgCluster {
    /// `initdb` (trust auth, loopback only) and start.
    pub fn start() -> PgCluster {
        let (uid, gid) = postgres_ids();
        let dir = tempfile::Builder::new()
            .prefix("dtop-pg-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let status = Command::new(pg_bin().join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = PgCluster {
            dir,
            port,
            server: None,
        };
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server process and waits until it accepts connections.
    pub fn start_server(&mut self) {
        let (uid, gid) = postgres_ids();
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid)).unwrap();
        let child = Command::new(pg_bin().join("postgres"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-k",
                self.dir.path().to_str().unwrap(),
            ])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(pg_bin().join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < until,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown, SIGINT to its PID) and waits for it.
    pub fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = child.wait();
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The URL of the maintenance database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// A PostgreSQL for one test: the shared server, or a private cluster kept alive by this.
pub struct Postgres {
    server_url: String,
    _private: Option<PgCluster>,
}

impl Postgres {
    /// The shared server if the test script gave one; else a private cluster, unless services
    /// are required (then the test fails).
    pub fn get() -> Postgres {
        match std::env::var("DTOP_TEST_POSTGRES_URL") {
            Ok(url) => Postgres {
                server_url: url,
                _private: None,
            },
            Err(_) => {
                assert!(
                    !services_required(),
                    "DTOP_REQUIRE_SERVICES=1 but DTOP_TEST_POSTGRES_URL is not set"
                );
                let cluster = PgCluster::start();
                Postgres {
                    server_url: cluster.url(),
                    _private: Some(cluster),
                }
            }
        }
    }

    /// A new, empty database on this server, and its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("dtop_t_{}", uuid::Uuid::now_v7().simple());
        let pool = riverqueue::sqlx::PgPool::connect(&self.server_url)
            .await
            .unwrap();
        riverqueue::sqlx::query(riverqueue::sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        database_url_with(&self.server_url, &name)
    }
}

/// `url` with its database name replaced by `name`.
pub fn database_url_with(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

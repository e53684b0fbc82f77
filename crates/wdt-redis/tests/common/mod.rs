//! What the Redis test files share: a real `redis-server` on a free port, and a connection to it.

#![allow(dead_code, reason = "each test file uses what it needs")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use wdt_redis::{Settings, Shared};

/// A `redis-server` of the test's own, killed when dropped.
pub(crate) struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (`apt-get install redis-server`)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child, port)
}

impl Server {
    /// A plain connection of the test's own, to look at the server.
    pub(crate) fn raw(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.1))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every key matching `pattern`, sorted.
    pub(crate) fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.raw())
            .unwrap();
        keys.sort();
        keys
    }
}

pub(crate) async fn shared(server: &Server, namespace: &str) -> Shared {
    let shared = Shared::connect(&Settings {
        url: Some(SecretString::from(format!(
            "redis://127.0.0.1:{}/",
            server.1
        ))),
        namespace: namespace.into(),
        replicas: 2,
        timeout: Duration::from_secs(1),
        lease: Duration::from_secs(2),
    })
    .unwrap();
    assert!(shared.ping().await);
    shared
}

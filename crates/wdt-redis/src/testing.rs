//! For tests of the crates that use this one (feature `testing`): a `redis-server` of the
//! test's own, without persistence, on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not start within 5 s (tests only).
    #[allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fixture")]
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (`apt-get install redis-server`)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A replica's own connection to it: namespace `acct`, two replicas configured, a 1 s
    /// timeout and `lease` for loads; checked with a ping.
    ///
    /// # Panics
    /// When it cannot be reached (tests only).
    #[allow(clippy::expect_used, reason = "a test fixture")]
    pub async fn connect(&self, lease: Duration) -> crate::Shared {
        let shared = crate::Shared::connect(&crate::Settings {
            url: Some(secrecy::SecretString::from(format!(
                "redis://127.0.0.1:{}/",
                self.port
            ))),
            namespace: "acct".into(),
            replicas: 2,
            timeout: Duration::from_secs(1),
            lease,
        })
        .expect("the test's Redis settings are valid");
        assert!(shared.ping().await, "the test's redis-server answers");
        shared
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

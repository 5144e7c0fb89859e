//! What the TLS tests of every crate share (included with `#[path]`): a throw-away CA and
//! certificates made at run time with `rcgen`, a private temporary directory, a free
//! port, and a child process killed when the test ends.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, both PEM.
pub struct Pair {
    /// The certificate (PEM).
    pub cert: String,
    /// The private key (PEM, PKCS#8).
    pub key: String,
}

/// A certificate authority made for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = dn(name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA, good for
    /// a server and a client.
    pub fn issue(&self, names: &[&str]) -> Pair {
        self.make(names, false)
    }

    /// Like [`issue`](Self::issue), valid only in 2020: expired.
    pub fn issue_expired(&self, names: &[&str]) -> Pair {
        self.make(names, true)
    }

    fn make(&self, names: &[&str], expired: bool) -> Pair {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params.distinguished_name = dn(names.first().map(String::as_str).unwrap_or("tether"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name starts with `tag`.
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("tether-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temporary directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago on 127.0.0.1, and that no other test of this process
/// was given. It is taken below the kernel's ephemeral range: a port from `bind(0)` can be
/// handed out again to another test, or become the source port of any outgoing connection
/// (a server then fails to bind it, or `wait_port` connects the socket to itself), which
/// made private servers' tests fail now and then with "Connection refused".
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (lo, hi) = (10_000u32, ephemeral.clamp(10_001, 65_536));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().rotate_left(16);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..(hi - lo) {
        let Ok(port) = u16::try_from(lo + seed.wrapping_add(i.wrapping_mul(7_919)) % (hi - lo))
        else {
            continue;
        };
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({lo}..{hi})");
}

/// A child process killed (and reaped) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts `cmd`, failing the test with `what` if it cannot start.
    pub fn spawn(cmd: &mut Command, what: &str) -> Proc {
        match cmd.spawn() {
            Ok(c) => Proc(c),
            Err(e) => panic!("cannot start {what} ({cmd:?}): {e}; it must be installed"),
        }
    }

    /// Waits until 127.0.0.1:`port` accepts connections, failing the test after 20 s or if
    /// the process exits.
    pub fn wait_port(&mut self, port: u16, what: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                // A socket connected to itself (its source port is `port`) is no server.
                if s.local_addr().ok() != s.peer_addr().ok() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.0.try_wait() {
                panic!("{what} exited before listening on {port}: {status}");
            }
            assert!(
                Instant::now() < until,
                "{what} did not listen on {port} in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

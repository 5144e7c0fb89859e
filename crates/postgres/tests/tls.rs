//! TLS and passwords against a private PostgreSQL that each test makes (`initdb` into a
//! temporary directory, `ssl = on`, its own port, `pg_ctl`), never the machine's service;
//! the CA and certificates are made at run time. Missing PostgreSQL binaries fail the test.

#[path = "../../../tests/support/backend.rs"]
mod backend;
#[path = "../../../tests/support/tls.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{free_port, Ca, Pair, TempDir};
use tether_backend::tls::TlsMaterial;
use tether_postgres::{PostgresBackend, PostgresConfig, PostgresTls, SslMode};

/// A private PostgreSQL cluster, stopped when dropped.
struct PrivatePg {
    port: u16,
    ca: Ca,
    client: Pair,
    dir: TempDir,
    bin: PathBuf,
    data: PathBuf,
}

/// The newest `/usr/lib/postgresql/*/bin` with an `initdb`.
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL server binaries must be installed under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when this is root (initdb refuses root).
fn run(bin: &Path, tool: &str, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePg {
    /// initdb, TLS on with a certificate for `names`, `hba` as the TCP rules of
    /// pg_hba.conf, the superuser's password `secret`, and a role `certuser`.
    fn start(hba: &str, names: &[&str]) -> PrivatePg {
        let bin = pg_bin();
        let dir = TempDir::new("pg-tls");
        let ca = Ca::new("tether test CA");
        let server = ca.issue(names);
        let client = ca.issue(&["certuser"]);
        let data = dir.path().join("data");
        let pw = dir.write("pw", "secret\n");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown to the postgres user failed");
        }
        run(
            &bin,
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--pwfile",
                path(&pw),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let port = free_port();
        std::fs::write(data.join("server.pem"), &server.cert).expect("write");
        std::fs::write(data.join("server.key"), &server.key).expect("write");
        std::fs::write(data.join("ca.pem"), ca.pem()).expect("write");
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.pem'\nfsync = off\nmax_connections = 40\n",
            dir.path().display()
        );
        let mut pgconf = std::fs::read_to_string(data.join("postgresql.conf")).expect("read");
        pgconf.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), pgconf).expect("write");
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{hba}\n"),
        )
        .expect("write");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status();
        }
        let _ = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status();
        let log = dir.path().join("log");
        run(
            &bin,
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        let pg = PrivatePg {
            port,
            ca,
            client,
            dir,
            bin,
            data,
        };
        run(
            &pg.bin,
            "psql",
            &[
                "-h",
                path(pg.dir.path()),
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                "CREATE ROLE certuser LOGIN SUPERUSER",
            ],
        );
        pg
    }

    fn url(&self, user: &str, host: &str, params: &str) -> String {
        format!(
            "postgres://{user}@{host}:{}/postgres{}{params}",
            self.port,
            if params.is_empty() { "" } else { "?" }
        )
    }

    fn ca_file(&self) -> String {
        self.dir
            .write("client-ca.pem", &self.ca.pem())
            .display()
            .to_string()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

async fn connect(url: &str, config: PostgresConfig) -> Result<PostgresBackend, String> {
    PostgresBackend::connect(url, config)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn sslmodes_and_a_scram_password() {
    let pg = PrivatePg::start("hostssl all all 127.0.0.1/32 scram-sha-256", &["127.0.0.1"]);
    let ca = pg.ca_file();
    // verify-full with the CA from the URL, and the password.
    let b = connect(
        &pg.url(
            "postgres:secret",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        PostgresConfig::default(),
    )
    .await
    .expect("verify-full with a CA and a password");
    backend::round_trip(&b, "verify-full").await;
    // The same from the configuration.
    let b = connect(
        &pg.url("postgres:secret", "127.0.0.1", ""),
        PostgresConfig {
            tls: PostgresTls {
                mode: SslMode::VerifyFull,
                material: TlsMaterial {
                    ca: Some(pg.ca.pem().into_bytes()),
                    ..TlsMaterial::default()
                },
            },
            ..PostgresConfig::default()
        },
    )
    .await
    .expect("verify-full from the configuration");
    backend::round_trip(&b, "verify-full-config").await;
    // require and prefer encrypt (the server takes TLS connections only).
    for mode in ["sslmode=require", "sslmode=prefer", ""] {
        let b = connect(
            &pg.url("postgres:secret", "127.0.0.1", mode),
            PostgresConfig::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        backend::round_trip(&b, &format!("mode-{mode}")).await;
    }
    // disable does not: the server refuses it.
    let e = connect(
        &pg.url("postgres:secret", "127.0.0.1", "sslmode=disable"),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("sslmode=disable on a hostssl-only server");
    assert!(e.contains("no encryption"), "{e}");
    // A wrong password, and none.
    let e = connect(
        &pg.url("postgres:wrong", "127.0.0.1", "sslmode=require"),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("a wrong password");
    assert!(e.contains("password authentication failed"), "{e}");
    let e = connect(
        &pg.url("postgres", "127.0.0.1", "sslmode=require"),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("no password");
    assert!(e.contains("password missing"), "{e}");
    let e = connect(
        &pg.url("postgres", "127.0.0.1", "sslmode=sometimes"),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("an unknown sslmode");
    assert!(e.contains("sslmode=sometimes"), "{e}");
}

#[tokio::test]
async fn client_certificates_host_names_and_a_wrong_ca() {
    let pg = PrivatePg::start(
        "hostssl all certuser 127.0.0.1/32 cert\nhostssl all all 127.0.0.1/32 scram-sha-256",
        &["db.example.com"],
    );
    let ca = pg.ca_file();
    let cert = pg
        .dir
        .write("client.pem", &pg.client.cert)
        .display()
        .to_string();
    let key = pg
        .dir
        .write("client.key", &pg.client.key)
        .display()
        .to_string();
    // cert authentication: the certificate's CN is the user. verify-ca accepts a server
    // certificate for another name.
    let b = connect(
        &pg.url(
            "certuser",
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}&sslcert={cert}&sslkey={key}"),
        ),
        PostgresConfig::default(),
    )
    .await
    .expect("a client certificate, verify-ca");
    backend::round_trip(&b, "client-cert").await;
    // The same certificate from the configuration.
    let b = connect(
        &pg.url("certuser", "127.0.0.1", "sslmode=verify-ca"),
        PostgresConfig {
            tls: PostgresTls {
                material: TlsMaterial {
                    ca: Some(pg.ca.pem().into_bytes()),
                    client_cert: Some(pg.client.cert.clone().into_bytes()),
                    client_key: Some(pg.client.key.clone().into_bytes()),
                },
                ..PostgresTls::default()
            },
            ..PostgresConfig::default()
        },
    )
    .await
    .expect("a client certificate from the configuration");
    backend::round_trip(&b, "client-cert-config").await;
    // Without the certificate, cert authentication fails.
    let e = connect(
        &pg.url(
            "certuser",
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("cert authentication without a certificate");
    println!("no client certificate: {e}");
    assert!(e.contains("certificate"), "{e}");
    // verify-full checks the name: 127.0.0.1 is not db.example.com.
    let e = connect(
        &pg.url(
            "postgres:secret",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("verify-full with a certificate for another name");
    println!("wrong name: {e}");
    assert!(e.contains("TLS") && e.contains("not valid for name"), "{e}");
    // Another CA: a TLS error at connect.
    let other = Ca::new("some other CA");
    let other = pg
        .dir
        .write("other-ca.pem", &other.pem())
        .display()
        .to_string();
    let e = connect(
        &pg.url(
            "postgres:secret",
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={other}"),
        ),
        PostgresConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("a certificate from another CA");
    println!("wrong CA: {e}");
    assert!(e.contains("TLS") && e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn sslmode_disable_reaches_the_shared_service_in_plain_text() {
    let b = connect(
        "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
        PostgresConfig {
            prefix: format!("tls{}_", std::process::id()),
            ..PostgresConfig::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("PostgreSQL must run on 127.0.0.1:5432 (scripts/services): {e}"));
    backend::round_trip(&b, &format!("plain-{}", std::process::id())).await;
}

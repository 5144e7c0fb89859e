//! What the PostgreSQL tests share: the database, and table prefixes unique to a run.

#![allow(dead_code)]

use tether_postgres::{PostgresBackend, PostgresConfig};

/// The database the tests use (scripts/services starts it).
pub const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A prefix unique to this run of a test: `t<run>_`.
pub fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut n = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    let mut s = String::new();
    while n > 0 && s.len() < 10 {
        let d = (n % 36) as u8;
        s.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
        n /= 36;
    }
    format!("t{s}_")
}

/// The tables of the cluster `name` of run `run`: a short, lowercase prefix.
pub fn config(run: &str, name: &str) -> PostgresConfig {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let readable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(16)
        .collect();
    PostgresConfig {
        prefix: format!("{run}{h:08x}_{readable}_"),
        ..PostgresConfig::default()
    }
}

/// Connects, or fails the test with a message that says what is missing.
pub async fn connect(url: &str, config: PostgresConfig) -> PostgresBackend {
    match PostgresBackend::connect(url, config).await {
        Ok(b) => b,
        Err(e) => panic!(
            "PostgreSQL must run on 127.0.0.1:5432 (user postgres, trust auth, database \
             test; run scripts/services): {e}"
        ),
    }
}

/// Drops every table of a run.
pub async fn clean_up(run: &str) {
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .expect("connecting to PostgreSQL to clean up");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT quote_ident(tablename) FROM pg_tables \
             WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
            &[&run],
        )
        .await
        .expect("listing the run's tables");
    let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if !tables.is_empty() {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {} CASCADE",
                tables.join(", ")
            ))
            .await
            .expect("dropping the run's tables");
    }
}

/// Runs `test`, then drops the run's tables, also when it fails.
pub async fn with_clean_up<F>(run: &str, test: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let r = tokio::spawn(test).await;
    clean_up(run).await;
    if let Err(e) = r {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("the test was cancelled: {e}");
    }
}

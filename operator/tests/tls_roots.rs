//! Webhook and notification clients start on a machine without a system CA store (a distroless
//! image): they fall back to Mozilla's roots built into Serin. Its own test binary, because it
//! points the process's CA environment at nothing.

#[test]
fn clients_build_without_a_system_ca_store() {
    let empty = std::env::temp_dir().join(format!("serin-no-cas-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("none.pem"), "").unwrap();
    // SAFETY: the only test in this binary; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", empty.join("none.pem"));
        std::env::set_var("SSL_CERT_DIR", &empty);
    }
    serin::ensure_crypto_provider();
    // The condition is real: a default client cannot find any roots.
    let platform = reqwest::Client::builder().build();
    assert!(
        platform.is_err(),
        "expected no system roots with SSL_CERT_FILE/SSL_CERT_DIR pointing at nothing"
    );
    // Serin's clients still build, verifying against the bundled roots.
    serin::webhooks::http::HttpClients::new().unwrap();
}

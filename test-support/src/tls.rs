//! Certificates for tests of TLS and client-certificate authentication.

use std::path::Path;
use std::process::Command;

/// Runs `program` in `dir`, panicking with its stderr if it fails.
pub fn run(program: &str, args: &[&str], dir: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// In `dir`: a CA (`ca.pem`, `ca.key`), a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) and one client certificate per `(file name, common name)` of `clients`
/// (`<name>.pem`, `<name>.key`), all signed by it, and a second CA (`other-ca.pem`) that signed
/// none. Made with the `openssl` command.
pub fn make_certificates(dir: &Path, clients: &[(&str, &str)]) {
    // X.509 v3 with the usual extensions: rustls refuses version 1 certificates, which
    // `openssl x509 -req` makes when given no extensions.
    std::fs::write(
        dir.join("server.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").expect("write");
    for ca in ["ca", "other-ca"] {
        let key = format!("{ca}.key");
        let cert = format!("{ca}.pem");
        let subject = format!("/CN=framefleet test {ca}");
        let args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"];
        let args = [&args[..], &["-keyout", &key, "-out", &cert, "-subj", &subject]].concat();
        run("openssl", &args, dir);
    }
    let mut subjects = vec![("server".to_owned(), "/CN=127.0.0.1".to_owned(), "server.cnf")];
    subjects.extend(
        clients
            .iter()
            .map(|(name, cn)| ((*name).to_owned(), format!("/CN={cn}"), "client.cnf")),
    );
    for (name, subject, extensions) in &subjects {
        let subject = subject.as_str();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let args = [
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ];
        run("openssl", &args, dir);
        let mut sign = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
        ];
        sign.extend(["-days", "2", "-out", &cert, "-extfile", extensions]);
        run("openssl", &sign, dir);
    }
}
